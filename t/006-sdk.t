# End to end with the official anthropic Python SDK (target/venv, installed from PyPI by
# scripts/setup): non-streaming and streaming messages through the relay to the mock upstream,
# with the signing httpx2.Auth, a static token and a short-lived token, plus rejections that the
# SDK must not retry. scripts/sdk_e2e.py drives the SDK and prints one ok/not ok line per check;
# this file runs nginx (t/lib/RG/Server.pm), a private mock upstream (its own port and record
# file, so no other test's /__mock/reset can interfere), and then checks from the other side what
# reached the upstream (the mock's record) and what nginx logged (its access log).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);
use RG ();
use RG::Server;

my $root = abs_path(dirname(__FILE__) . '/..');
my $py = RG::sdk_python_or_skip($root);
plan skip_all => 'TEST_NGINX_BINARY not set (run through scripts/test)' unless $ENV{TEST_NGINX_BINARY};

my $data = $ENV{TEST_NGINX_DATA_DIR} // "$root/t/data";
my $UPSTREAM_KEY = do { open my $f, '<', "$data/upstream-key" or die $!; local $/; <$f> =~ s/\s+\z//r };
my $STATIC_TOKEN = 'team-a-static-token-0123456789';
my $SECRET = 'alice-secret-0123456789';

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1,
                                  ReuseAddr => 1) or die "no free port: $!";
    return $s->sockport;
}

my $srv = RG::Server->new(name => 'sdk', workers => 2, port => free_port());
my $dir = $srv->root;

# --- a private mock upstream ------------------------------------------------------------------
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
            or do { print STDERR "exec python3: $!\n"; POSIX::_exit(127) };    # no END blocks in the child
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
    $srv->stop if $srv && $started;    # not before start: a stale pid file could name another process
    if ($mock_pid) { kill 'TERM', $mock_pid; waitpid($mock_pid, 0) }
}

# --- the relay --------------------------------------------------------------------------------
# What nginx-conf/ does, reduced to the loopback mock: relay_guard any (signatures and tokens),
# the client's credentials dropped and the relay's key injected, HTTP/1.1 and no buffering for
# SSE. The verdict is exposed in headers and in the access log with each call's x-rg-e2e-req.
$started = 1;
$srv->start(<<"EOC");
    relay_guard_zone rg_sdk:1m;
    relay_guard_keys $data/keys.json;
    relay_guard_upstream_key_file $data/upstream-key;
    log_format rg_sdk '\$http_x_rg_e2e_req \$status \$relay_guard_status \$relay_guard_key_id';
    server {
        listen 127.0.0.1:PORT;
        location / {
            relay_guard any;
            access_log $dir/logs/access.log rg_sdk;
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

# --- the SDK side -----------------------------------------------------------------------------
my $report_file = "$dir/sdk-report.json";
my $base = 'http://127.0.0.1:' . $srv->port;
my @cmd = ($py, "$root/scripts/sdk_e2e.py", '--base-url', $base, '--report', $report_file,
           '--expect-rg-headers');
note "@cmd";
my $out = do {
    open my $p, '-|', join(' ', map { quotemeta } @cmd) . ' 2>&1' or die "run sdk_e2e.py: $!";
    local $/;
    my $text = <$p>;
    close $p;
    $text;
};
my $rc = $? >> 8;
my $checks = 0;
for my $line (split /\n/, $out) {
    if ($line =~ /^(not )?ok \d+ - (.*?)(?: # SKIP (.*))?$/) {
        $checks++;
        if (defined $3) { SKIP: { skip "SDK: $2: $3", 1 } }
        else { ok(!$1, "SDK: $2") }
    } elsif ($line =~ /^# ?(.*)/ || $line =~ /^(\s+.*)/) {
        note $1;
    } else {
        diag $line;    # anything else (a traceback) is worth seeing
    }
}
cmp_ok($checks, '>=', 60, "sdk_e2e.py reported its checks ($checks)");
is($rc, 0, 'sdk_e2e.py exited 0');

my $report = eval {
    open my $f, '<', $report_file or die "$report_file: $!";
    local $/;
    JSON::PP::decode_json(<$f>);
};
# Not BAIL_OUT: that would stop the other test files too.
unless ($report) { fail("sdk_e2e.py wrote its report: $@"); done_testing; exit }
my $run = $report->{run};

# --- what reached the upstream ----------------------------------------------------------------
sleep 0.2;    # the mock writes its record after the response
my @records = do {
    open my $f, '<', $record_file or diag "$record_file: $!";    # none: nothing reached the mock
    $f ? map { JSON::PP::decode_json($_) } grep { /\S/ } <$f> : ();
};
my %upstream;    # call id -> [records]
for my $r (@records) {
    my ($id) = map { $_->[1] } grep { lc $_->[0] eq 'x-rg-e2e-req' } @{ $r->{headers} };
    push @{ $upstream{$id // 'none'} }, $r;
}
my %sent;
push @{ $sent{ $_->{call} } }, $_ for @{ $report->{sent} };

sub by_seq { ($a =~ /(\d+)$/)[0] <=> ($b =~ /(\d+)$/)[0] }
my @ok_calls = sort by_seq grep { $report->{calls}{$_}{expect} eq '200' } keys %{ $report->{calls} };
my @bad_calls = sort by_seq grep { $report->{calls}{$_}{expect} eq '401' } keys %{ $report->{calls} };
my @retry_calls = sort by_seq grep { $report->{calls}{$_}{expect} eq '500' } keys %{ $report->{calls} };
cmp_ok(scalar @ok_calls, '>=', 15, scalar(@ok_calls) . ' SDK calls were expected to pass');
cmp_ok(scalar @bad_calls, '>=', 3, scalar(@bad_calls) . ' SDK calls were expected to be rejected');
is(scalar @retry_calls, 1, 'one SDK call was expected to be retried');
is(scalar @records, @ok_calls + 2 * @retry_calls,
   'the upstream saw one request per accepted call (two for the retried one), no more');
ok(!$upstream{none}, 'every upstream request carried its x-rg-e2e-req id');

# Headers the SDK sends that the relay must pass through untouched.
my @passed = qw(anthropic-version content-type accept user-agent x-stainless-lang
                x-stainless-package-version x-stainless-retry-count x-stainless-timeout
                x-stainless-runtime x-rg-e2e-run);
for my $id (@ok_calls, @retry_calls) {
    my $c = $report->{calls}{$id};
    my $what = "$c->{case} $c->{kind} ($id)";
    my @got = @{ $upstream{$id} // [] };
    my $attempts = $c->{attempts} // 1;
    is(scalar @got, $attempts, "$what: reached the upstream $attempts time(s)") or next;
    for my $i (0 .. $#got) {
        my ($r, $s) = ($got[$i], $sent{$id}[$i]);
        my $w = $attempts > 1 ? "$what attempt " . ($i + 1) : $what;
        my %h;
        push @{ $h{lc $_->[0]} }, $_->[1] for @{ $r->{headers} };
        is_deeply($h{'x-api-key'}, [$UPSTREAM_KEY], "$w: upstream got the injected key, once");
        my @leaked = grep { $h{$_} } qw(authorization x-key-id x-timestamp x-nonce x-signature);
        is("@leaked", '', "$w: no client credential or signature header upstream");
        my $all = join "\n", map { "$_->[0]: $_->[1]" } @{ $r->{headers} };
        ok(index($all, $STATIC_TOKEN) < 0 && $all !~ /rgt1\./ && index($all, $SECRET) < 0,
           "$w: no client token or secret anywhere in the upstream headers");
        is("$r->{method} $r->{target}", "$s->{method} $s->{target}", "$w: method and target as sent");
        ok($r->{body_complete} && $r->{body_sha256} eq $s->{body_sha256},
           "$w: body byte for byte as the SDK sent it ($r->{body_len} bytes)");
        my @missing = grep { !$h{$_} } @passed;
        is("@missing", '', "$w: SDK headers passed through (@passed)");
        # Every other header the SDK sent arrives with the same value (the credentials are
        # checked above; Host is the proxy's, Connection is hop-by-hop).
        my @changed = map { "$_->[0]: $_->[1] -> " . join('|', @{ $h{lc $_->[0]} // ['(none)'] }) }
                      grep { !(lc($_->[0]) =~ /^(?:host|connection|authorization|x-api-key|x-key-id|x-timestamp|x-nonce|x-signature)$/)
                             && join('|', @{ $h{lc $_->[0]} // [] }) ne $_->[1] } @{ $s->{headers} };
        is("@changed", '', "$w: every other SDK header reached the upstream unchanged ("
           . scalar(@{ $s->{headers} }) . " sent)");
        is($h{'x-rg-e2e-run'}[0], $run, "$w: run id intact");
        is($r->{http_version}, 'HTTP/1.1', "$w: HTTP/1.1 upstream");
    }
}
for my $id (@bad_calls) {
    my $c = $report->{calls}{$id};
    ok(!$upstream{$id}, "$c->{case} ($id): rejected before the upstream");
}

# --- what nginx saw: one access-log line per call; the rejections exactly once ---------------
$srv->stop;    # flushes the log
undef $srv;
my %log;
{
    open my $f, '<', "$dir/logs/access.log" or die "access.log: $!";
    while (<$f>) {
        chomp;
        my ($id, $status, $verdict, $key) = split / /;
        push @{ $log{$id} }, { status => $status, verdict => $verdict, key => $key };
    }
}
my %verdict = ('wrong-secret' => 'BAD_SIGNATURE', 'unknown-static-token' => 'BAD_TOKEN',
               'expired-minted-token' => 'EXPIRED');
for my $id (@bad_calls) {
    my $c = $report->{calls}{$id};
    my @l = @{ $log{$id} // [] };
    is(scalar @l, 1, "$c->{case}: nginx got exactly one request (max_retries=2, no retry)");
    is($l[0] && "$l[0]{status} $l[0]{verdict}", "401 $verdict{$c->{case}}",
       "$c->{case}: logged as 401 $verdict{$c->{case}}");
}
for my $id (@retry_calls) {
    my $c = $report->{calls}{$id};
    is(join(',', map { "$_->{status} $_->{verdict} $_->{key}" } @{ $log{$id} // [] }),
       '500 OK alice,500 OK alice', "$c->{case}: both attempts accepted (no REPLAY), 500 from upstream");
}
for my $id (@ok_calls) {
    my $c = $report->{calls}{$id};
    my @l = @{ $log{$id} // [] };
    my $want_key = $c->{case} =~ /^static-/ ? 'team-a' : 'alice';
    is(join(',', map { "$_->{status} $_->{verdict} $_->{key}" } @l), "200 OK $want_key",
       "$c->{case} $c->{kind}: one access-log line, 200 OK as $want_key");
}

my $errors = do { open my $f, '<', "$dir/logs/error.log" or die $!; local $/; <$f> };
my @bad = grep { /\[(?:error|crit|alert|emerg)\]/ } split /\n/, $errors;
is(scalar @bad, 0, 'no [error]/[crit]/[alert]/[emerg] in error.log') or diag join "\n", @bad;

done_testing;
