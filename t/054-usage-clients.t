# Usage as the real clients see it, against what the relay counted (issue 12, "Tests and
# figures"): the official anthropic SDK (scripts/sdk_e2e.py --cases usage: non-streaming and
# streaming, the mock sending exact usage objects with cache writes, cache reads and web
# search) and the real Claude Code CLI (scripts/claude_code_e2e.py: several runs, several
# requests, more than one model, each way Claude Code carries a token) through nginx with the
# module to a private mock upstream. For each, the sums the client reports must equal, per key,
# model and type, the deltas of relay_guard_tokens_total (and the web-search and usage-response
# counters) across its runs, and each request's access-log line must carry its share in the
# $relay_guard_usage_* variables. Claude Code is skipped, saying why, when scripts/setup could
# not install it (no npm); every client run is bounded by a timeout.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);
use RG ();
use RG::Server;
use RG::Metrics;

my $root = abs_path(dirname(__FILE__) . '/..');
my $py = RG::sdk_python_or_skip($root);
plan skip_all => 'TEST_NGINX_BINARY not set (run through scripts/test)' unless $ENV{TEST_NGINX_BINARY};
# scripts/setup installs the pinned CLI here (RG_CLAUDE_CODE: another one, to compare versions).
my $claude = $ENV{RG_CLAUDE_CODE} // "$root/target/npm/node_modules/.bin/claude";

my $data = $ENV{TEST_NGINX_DATA_DIR} // "$root/t/data";
my @TOKEN_TYPES = qw(input output cache_write_5m cache_write_1h cache_read);
my $SDK_TIMEOUT = 120;          # the whole SDK run; each request has its own 10 s timeout
my $CC_RUN_TIMEOUT = 60;        # one `claude -p`
my $CC_TIMEOUT = 600;           # all of them

my $srv = RG::Server->new(name => 'usage-clients', workers => 2);
my $dir = $srv->root;

# --- a private mock upstream (its own port and record file) ------------------------------------
my ($mock_pid, $mock_port);
my $record_file = "$dir-mock.jsonl";
my $mock_log = "$dir-mock.log";
unlink $record_file, $mock_log;
{
    defined($mock_pid = fork) or die "fork: $!";
    if (!$mock_pid) {
        open STDERR, '>', $mock_log or die $!;
        open STDOUT, '>&', \*STDERR or die $!;
        exec 'python3', "$root/scripts/mock_upstream.py", '--listen', '127.0.0.1:0', '--quiet',
             '--record', $record_file
            or do { print STDERR "exec python3: $!\n"; POSIX::_exit(127) };
    }
    for (1 .. 100) {
        if (open my $f, '<', $mock_log) {
            local $/;
            (my $log = <$f> // '') =~ m{listening on http://127\.0\.0\.1:(\d+)} and $mock_port = $1;
        }
        last if $mock_port || waitpid($mock_pid, WNOHANG) == $mock_pid;
        sleep 0.1;
    }
    unless ($mock_port) { fail("mock upstream started: " . `cat $mock_log`); done_testing; exit }
}
my $started;
END {
    $srv->stop if $srv && $started;
    if ($mock_pid) { kill 'TERM', $mock_pid; waitpid($mock_pid, 0) }
}

# --- the relay: token and signature auth, the key injected, usage counted (the default) --------
$started = 1;
$srv->start(<<"EOC");
    relay_guard_zone rg_usage_clients:1m keys=16 models=8;
    relay_guard_keys $data/keys.json;
    relay_guard_upstream_key_file $data/upstream-key;
    log_format rg_usage '\$http_x_rg_e2e_req \$status \$relay_guard_key_id \$relay_guard_model '
                        '\$relay_guard_stream \$relay_guard_usage_input \$relay_guard_usage_output '
                        '\$relay_guard_usage_cache_read \$relay_guard_usage_cache_write';
    server {
        listen 127.0.0.1:PORT;
        location = /metrics { relay_guard_metrics; }
        location / {
            relay_guard any;
            access_log $dir/logs/access.log rg_usage;
            add_header X-RG-Status \$relay_guard_status always;
            add_header X-RG-Key \$relay_guard_key_id always;
            proxy_set_header x-api-key \$relay_guard_upstream_key;
            proxy_set_header Authorization "";
            proxy_set_header X-Key-Id "";
            proxy_set_header X-Timestamp "";
            proxy_set_header X-Nonce "";
            proxy_set_header X-Signature "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 30s;
            proxy_pass http://127.0.0.1:$mock_port;
        }
    }
EOC
my $base = 'http://127.0.0.1:' . $srv->port;

# Runs a client script under timeout(1); relays its "ok N - ..." lines as tests. Returns its
# exit status (124 when it timed out).
sub run_client {
    my ($label, $secs, @cmd) = @_;
    note "@cmd";
    my $t0 = time;
    open my $p, '-|', join(' ', 'timeout', '-k', 5, $secs, map { quotemeta } @cmd) . ' 2>&1'
        or die "run $cmd[0]: $!";
    my $checks = 0;
    while (my $line = <$p>) {
        chomp $line;
        if ($line =~ /^(not )?ok \d+ - (.*?)(?: # SKIP (.*))?$/) {
            $checks++;
            if (defined $3) { SKIP: { skip "$label: $2: $3", 1 } }
            else { ok(!$1, "$label: $2") }
        } elsif ($line =~ /^# ?(.*)/ || $line =~ /^(\s+.*)/) {
            note $1;
        } else {
            diag $line;    # anything else (a traceback) is worth seeing
        }
    }
    close $p;
    my $rc = $? >> 8;
    note sprintf "%s took %.1f s", $label, time - $t0;
    cmp_ok($checks, '>', 0, "$label reported its checks ($checks)");
    isnt($rc, 124, "$label finished within $secs s");
    return $rc;
}

sub read_json {
    my ($file) = @_;
    my $r = eval { open my $f, '<', $file or die "$file: $!"; local $/; JSON::PP::decode_json(<$f>) };
    fail("read $file: $@") unless $r;
    return $r;
}

# Access-log lines grouped by x-rg-e2e-req. nginx writes each line when the request ends (no
# buffer= here), so the log is complete once the client has its whole response.
sub access_log {
    my %log;
    open my $f, '<', "$dir/logs/access.log" or die "access.log: $!";
    while (<$f>) {
        chomp;
        my @f = split / /;
        my %l;
        @l{qw(req status key model stream input output cache_read cache_write)} = @f;
        push @{ $log{$l{req}} }, \%l;
    }
    return \%log;
}

sub mock_records {
    open my $f, '<', $record_file or return ();
    return map { JSON::PP::decode_json($_) } grep { /\S/ } <$f>;
}

sub req_id_of {
    my ($record) = @_;
    my ($id) = map { $_->[1] } grep { lc $_->[0] eq 'x-rg-e2e-req' } @{ $record->{headers} };
    return $id // 'none';
}

# The relay's counters against what a client reported: $want->{key}{model}{type} (token types
# and web_search), $responses->{key}{model} (responses that carried usage). Every series of
# the three families that moved must be one the client accounts for, and by exactly that much.
sub compare_counters {
    my ($label, $before, $after, $want, $responses) = @_;
    my %expected;
    for my $key (sort keys %$want) {
        for my $model (sort keys %{ $want->{$key} }) {
            my $w = $want->{$key}{$model};
            for my $type (@TOKEN_TYPES) {
                my $id = RG::Metrics::series_id('relay_guard_tokens_total',
                                                key => $key, model => $model, type => $type);
                $expected{$id} = $w->{$type};
                is(RG::Metrics::delta($before, $after, 'relay_guard_tokens_total',
                                      key => $key, model => $model, type => $type),
                   $w->{$type}, "$label: relay counted $type tokens for $key/$model as reported");
            }
            my $ws = RG::Metrics::series_id('relay_guard_web_search_requests_total',
                                            key => $key, model => $model);
            $expected{$ws} = $w->{web_search};
            is(RG::Metrics::delta($before, $after, 'relay_guard_web_search_requests_total',
                                  key => $key, model => $model),
               $w->{web_search}, "$label: web search requests for $key/$model as reported");
            my $rs = RG::Metrics::series_id('relay_guard_usage_responses_total',
                                            key => $key, model => $model);
            $expected{$rs} = $responses->{$key}{$model};
            is(RG::Metrics::delta($before, $after, 'relay_guard_usage_responses_total',
                                  key => $key, model => $model),
               $responses->{$key}{$model}, "$label: responses with usage for $key/$model");
        }
    }
    for my $family (qw(relay_guard_tokens_total relay_guard_web_search_requests_total
                       relay_guard_usage_responses_total)) {
        my $moved = RG::Metrics::changed($before, $after, $family . '{');
        my @stray = map { "$_ +$moved->{$_}" } grep { !$expected{$_} } sort keys %$moved;
        is("@stray", '', "$label: no other $family series moved");
    }
}

sub add_counts {
    my ($into, $c) = @_;
    $into->{$_} += $c->{$_} // 0 for @TOKEN_TYPES, 'web_search';
}

# One request's log line against the usage it was reported to carry (relay types).
sub check_log_line {
    my ($what, $l, $key, $model, $stream, $c) = @_;
    is("$l->{status} $l->{key} $l->{model} $l->{stream}", "200 $key $model $stream",
       "$what: logged 200, key, model and stream outcome");
    is("$l->{input} $l->{output} $l->{cache_read} $l->{cache_write}",
       join(' ', $c->{input}, $c->{output}, $c->{cache_read}, $c->{cache_write_5m} + $c->{cache_write_1h}),
       "$what: \$relay_guard_usage_* as reported (input output cache_read cache_write)");
}

# --- the SDK --------------------------------------------------------------------------------------
{
    my $report_file = "$dir/sdk-usage-report.json";
    my $before = RG::Metrics::snap($srv);
    my $rc = run_client('SDK', $SDK_TIMEOUT, $py, "$root/scripts/sdk_e2e.py", '--base-url', $base,
                        '--cases', 'usage', '--report', $report_file, '--expect-rg-headers');
    is($rc, 0, 'sdk_e2e.py --cases usage exited 0');
    my $after = RG::Metrics::snap($srv);
    my $report = read_json($report_file) or last;
    my (%want, %responses, $calls);
    my $log = access_log();
    for my $id (sort keys %{ $report->{calls} }) {
        my $c = $report->{calls}{$id};
        my $what = "SDK $c->{case} $c->{kind}";
        unless ($c->{usage}) { fail("$what: the SDK reported usage"); next }
        $calls++;
        add_counts($want{ $c->{key} }{ $c->{model} } //= {}, $c->{usage});
        $responses{ $c->{key} }{ $c->{model} }++;
        my @l = @{ $log->{$id} // [] };
        is(scalar @l, 1, "$what: one access-log line") or next;
        check_log_line($what, $l[0], $c->{key}, $c->{model},
                       $c->{kind} eq 'stream' ? 'completed' : '-', $c->{usage});
    }
    cmp_ok($calls // 0, '>=', 7, 'SDK: every usage case reported its usage');
    cmp_ok(scalar(keys %want), '>=', 3, 'SDK: usage under three keys');
    compare_counters('SDK', $before, $after, \%want, \%responses);
}

# --- Claude Code -------------------------------------------------------------------------------
SKIP: {
    skip "Claude Code is not installed at $claude: scripts/setup installs the pinned version "
       . "with npm (apt-get install npm first)", 1 unless -x $claude;
    my $report_file = "$dir/claude-code-usage-report.json";
    my $before = RG::Metrics::snap($srv);
    my $rc = run_client('Claude Code', $CC_TIMEOUT, 'python3', "$root/scripts/claude_code_e2e.py",
                        '--claude', $claude, '--base-url', $base, '--timeout', $CC_RUN_TIMEOUT,
                        '--report', $report_file);
    is($rc, 0, 'claude_code_e2e.py exited 0');
    my $after = RG::Metrics::snap($srv);
    my $report = read_json($report_file) or last;
    note "Claude Code $report->{claude_version}";
    my $log = access_log();
    my %upstream;
    push @{ $upstream{ req_id_of($_) } }, $_ for mock_records();
    my (%want, %responses, %total_by_key, $requests);
    for my $r (@{ $report->{runs} }) {
        my $what = "Claude Code $r->{name}";
        unless ($r->{model_usage}) { fail("$what: reported modelUsage"); next }
        # Claude Code files usage under the model it asked for, the relay under the one the
        # response names; they differ only where the mock was told to (x-mock-model).
        for my $m (keys %{ $r->{model_usage} }) {
            my $relay_model = $m eq $r->{model} ? $r->{response_model} : $m;
            add_counts($want{ $r->{key} }{$relay_model} //= {}, $r->{model_usage}{$m});
        }
        add_counts($total_by_key{ $r->{key} } //= {}, $r->{usage});
        $responses{ $r->{key} }{ $r->{response_model} } += $r->{requests};
        $requests += $r->{requests};

        my @up = @{ $upstream{ $r->{req} } // [] };
        is(join(',', map { "$_->{method} $_->{target}" } @up),
           join(',', ('POST /v1/messages?beta=true') x $r->{requests}),
           "$what: the upstream saw its $r->{requests} Messages request(s), nothing else");
        my @l = @{ $log->{ $r->{req} } // [] };
        is(scalar @l, $r->{requests}, "$what: $r->{requests} access-log line(s)");
        my %sum = (input => 0, output => 0, cache_read => 0, cache_write => 0);
        for my $l (@l) {
            is("$l->{status} $l->{key} $l->{model} $l->{stream}",
               "200 $r->{key} $r->{response_model} completed",
               "$what: logged 200, key, the response's model, a completed stream");
            $sum{$_} += $l->{$_} =~ /^\d+$/ ? $l->{$_} : 0 for keys %sum;
        }
        my $u = $r->{usage};
        is("$sum{input} $sum{output} $sum{cache_read} $sum{cache_write}",
           join(' ', $u->{input}, $u->{output}, $u->{cache_read}, $u->{cache_write_5m} + $u->{cache_write_1h}),
           "$what: its log lines' \$relay_guard_usage_* add up to the usage it reported");
    }
    cmp_ok(scalar @{ $report->{runs} }, '>=', 5, 'Claude Code: every run reported');
    cmp_ok($requests // 0, '>', scalar @{ $report->{runs} }, "Claude Code: more requests ($requests) than runs");
    my @one_model = grep { keys %{ $want{$_} } < 2 } sort keys %want;
    is("@one_model", '', 'Claude Code: every key used more than one model');
    compare_counters('Claude Code', $before, $after, \%want, \%responses);
    # The totals (`usage`) as well as the per-model figures, per key over all models.
    for my $key (sort keys %total_by_key) {
        for my $type (@TOKEN_TYPES) {
            my $counted = 0;
            $counted += RG::Metrics::delta($before, $after, 'relay_guard_tokens_total',
                                           key => $key, model => $_, type => $type)
                for keys %{ $want{$key} };
            is($counted, $total_by_key{$key}{$type},
               "Claude Code: ${key}'s $type tokens over all models equal the runs' usage totals");
        }
    }
}

my $errors = $srv->error_log;
my @bad = grep { /\[(?:error|crit|alert|emerg)\]/ } split /\n/, $errors;
is(scalar @bad, 0, 'no [error]/[crit]/[alert]/[emerg] in error.log') or diag join "\n", @bad;

done_testing;
