package RG::Limits;
# Helpers for the per-key limits tests (t/06x-limits-*.t, issue 13), on top of RG::Server and
# RG::Metrics: keys files with "limits" and "default_limits", one nginx configuration with every
# kind of location the tests need, requests as any test key (held open, aborted, streamed), the
# access-log line of one request ($relay_guard_status), the self-service usage answer, the
# mock's own count of requests in flight (x-mock-inflight), and the checks every 429 must pass.
# The contract these tests hold the module to is the spec of issue 13 (limits, refusal, state,
# usage endpoint); each check names the rule it tests.
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX qw(floor strftime);
use Time::HiRes qw(sleep time);
use Time::Local qw(timegm);
use Test::More ();
use RG;
use RG::Server;
use RG::Metrics ();

our $JSON = JSON::PP->new->canonical->allow_nonref;

# What each limit is called where: the keys file (and the 429 message, the info log line), the
# metrics label, $relay_guard_status.
our %FIELD = (rpm => 'requests_per_minute', concurrency => 'concurrent_requests', tokens => 'tokens');
our %STATUS = (rpm => 'LIMIT_RPM', concurrency => 'LIMIT_CONCURRENCY', tokens => 'LIMIT_TOKENS');

# Static token of a test key (every key but alice and bob, which sign with their secrets).
sub token_of { "tok-$_[0]-0123456789abcdef" }

# The keys file as JSON text. keys: ordered pairs id => limits (undef: no "limits" field; {}:
# "limits": {}); default_limits: the top-level default (omitted when undef).
sub keys_json {
    my (%o) = @_;
    my @pairs = @{ $o{keys} || [] };
    my @keys;
    while (my ($id, $lim) = splice(@pairs, 0, 2)) {
        my %k = (id => $id);
        if (my $secret = $RG::Metrics::SECRETS{$id}) {
            $k{secrets} = [$secret];
        } else {
            $k{token_sha256} = sha256_hex(token_of($id));
        }
        $k{limits} = $lim if defined $lim;
        push @keys, \%k;
    }
    my %doc = (keys => \@keys);
    $doc{default_limits} = $o{default_limits} if defined $o{default_limits};
    return $JSON->encode(\%doc);
}

sub spew {
    my ($path, $text) = @_;
    open my $f, '>', $path or die "cannot write $path: $!";
    print $f $text;
    close $f or die "cannot write $path: $!";
}

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or return undef;
    local $/;
    return scalar <$f>;
}

sub write_keys { my ($path, %o) = @_; spew($path, keys_json(%o)) }

# The http block. keys: the keys file; state: the arguments of relay_guard_state_file (omitted
# when undef); http: more http-level lines. Locations:
#   /                    relay_guard any, to the mock (X-RG-Status and X-Pid on every answer)
#   /nolimits/           relay_guard_limits off; /nolimits/on/ inside it turns them on again
#   /dry/                relay_guard_dry_run on
#   /down/               to a closed port: 502 from nginx (an upstream error before any byte)
#   /redirect/           the same 502, turned by error_page into an internal redirect
#   = /relay-guard/usage the usage answer (as nginx-conf/locations.conf ships it)
#   = /dry-usage         the usage answer in a dry-run location
#   = /metrics
sub http_conf {
    my (%o) = @_;
    my $mock = $ENV{TEST_NGINX_MOCK_PORT} or die 'TEST_NGINX_MOCK_PORT not set';
    my $up = "http://127.0.0.1:$mock";
    my $closed = RG::Server::free_port();
    my $state = defined $o{state} ? "    relay_guard_state_file $o{state};\n" : '';
    my $extra = $o{http} // '';
    my $proxy = "proxy_http_version 1.1; proxy_buffering off; proxy_read_timeout 10s;";
    return <<"EOC";
    relay_guard_zone rg:1m;
    relay_guard_keys $o{keys};
$state$extra
    log_format limits 'tag=\$http_x_test_tag key=\$relay_guard_key_id rg=\$relay_guard_status status=\$status';
    server {
        listen 127.0.0.1:PORT reuseport;
        access_log logs/limits.log limits;
        add_header X-RG-Status \$relay_guard_status always;
        add_header X-Pid \$pid always;
        location / {
            relay_guard any;
            $proxy
            proxy_pass $up;
        }
        location /nolimits/ {
            relay_guard any;
            relay_guard_limits off;
            $proxy
            proxy_pass $up/;
            location /nolimits/on/ {
                relay_guard_limits on;
                $proxy
                proxy_pass $up/;
            }
        }
        location /dry/ {
            relay_guard any;
            relay_guard_dry_run on;
            $proxy
            proxy_pass $up/;
        }
        location /down/ {
            relay_guard any;
            proxy_pass http://127.0.0.1:$closed/;
        }
        location /redirect/ {
            relay_guard any;
            error_page 502 = \@fallback;
            proxy_pass http://127.0.0.1:$closed/;
        }
        location \@fallback {
            default_type application/json;
            return 503 '{"fallback":true}';
        }
        location = /relay-guard/usage {
            relay_guard any;
            relay_guard_usage;
        }
        location = /dry-usage {
            relay_guard any;
            relay_guard_dry_run on;
            relay_guard_usage;
        }
        location = /metrics {
            relay_guard off;
            relay_guard_metrics;
        }
    }
EOC
}

# --- requests --------------------------------------------------------------------------------

my $tags = 0;
sub new_tag { sprintf 'l%d-%d', $$, ++$tags }

# The mock's in-flight counter name for a test's NAME: fresh per run (the mock never resets
# them), and the same in the clients a test forks (the pid of the test, not of the client).
my $RUN = $$;
sub group { "$RUN-$_[0]" }

# Credentials of $key for one request ('-': none).
sub auth {
    my ($key, $method, $path, $body) = @_;
    return '' if $key eq '-';
    return RG::Metrics::signed_headers($key, $method, $path, $body) if $RG::Metrics::SECRETS{$key};
    return 'Authorization: Bearer ' . token_of($key) . "\n";
}

sub body {
    my (%o) = @_;
    return '{"model":"claude-sonnet-4-5","max_tokens":16,' . ($o{stream} ? '"stream":true,' : '')
         . '"messages":[{"role":"user","content":"hi"}]}';
}

# The raw bytes of POST $o{path} (default /v1/messages) as $o{key} (default alice). mock: the
# mock's control headers; inflight: NAME counts it at the mock (see group); usage: a usage JSON
# text for x-mock-usage. Returns (bytes, tag).
sub request_bytes {
    my (%o) = @_;
    my $key = $o{key} // 'alice';
    my $path = $o{path} // '/v1/messages';
    my $body = $o{body} // body(%o);
    my $tag = new_tag();
    my %h = ('content-type' => 'application/json', 'x-test-tag' => $tag, %{ $o{mock} || {} });
    $h{'x-mock-inflight'} = group($o{inflight}) if defined $o{inflight};
    $h{'x-mock-usage'} = $o{usage} if defined $o{usage};
    my $head = auth($key, 'POST', $path, $body) . join('', map { "$_: $h{$_}\n" } sort keys %h);
    $head =~ s/\r?\n/\r\n/g;
    return ("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$head"
            . 'Content-Length: ' . length($body) . "\r\n\r\n$body", $tag);
}

# One request, answered: {status, headers, body (de-chunked), tag}.
sub messages {
    my ($srv, %o) = @_;
    my ($bytes, $tag) = request_bytes(%o);
    my $s = connect_to($srv) or die "connect: $!";
    print $s $bytes;
    my $r = parse_response(read_all($s, $o{timeout} // 15));
    close $s;
    $r->{tag} = $tag;
    return $r;
}

# Sends one request and returns {sock, tag} without reading: requests held open by the mock.
sub open_request {
    my ($srv, %o) = @_;
    my ($bytes, $tag) = request_bytes(%o);
    my $s = connect_to($srv) or die "connect: $!";
    print $s $bytes;
    return { sock => $s, tag => $tag };
}

# Reads the answer of an open_request: the parsed response with {tag}.
sub finish {
    my ($o, $timeout) = @_;
    my $r = parse_response(read_all($o->{sock}, $timeout // 15));
    close $o->{sock};
    $r->{tag} = $o->{tag};
    return $r;
}

sub connect_to {
    my ($srv) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or return undef;
    $s->autoflush(1);
    return $s;
}

# Everything the server sends until it closes (or $timeout seconds pass).
sub read_all {
    my ($s, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $deadline = time + $timeout;
    my $got = '';
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $got .= $buf;
    }
    return $got;
}

sub parse_response {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %h;
    for (split /\r\n/, $head // '') { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
    $body //= '';
    $body = RG::dechunk($body) if ($h{'transfer-encoding'} // '') =~ /chunked/i;
    return { status => $status // 0, headers => \%h, body => $body };
}

# GET (or $o{method}) the usage answer as $key. Returns the response with {json} (undef when
# the body is not JSON).
sub usage {
    my ($srv, $key, %o) = @_;
    my $method = $o{method} // 'GET';
    my $path = $o{path} // '/relay-guard/usage';
    my $head = auth($key, $method, $path, '') . ($o{headers} // '');
    my $r = $srv->request($method, $path, $head);
    $r->{body} = RG::Metrics::dechunk($r);
    $r->{json} = eval { $JSON->decode($r->{body}) };
    return $r;
}

# The usage answer's JSON object for $key, or undef unless it is a 200 with a JSON object.
sub usage_quiet {
    my ($srv, $key) = @_;
    my $r = usage($srv, $key);
    return $r->{status} == 200 && ref $r->{json} eq 'HASH' ? $r->{json} : undef;
}

# The same, as a test: when the answer is not a 200 with a JSON object, a failure that shows
# it, and {} (so the checks that follow fail instead of the file dying).
sub usage_json {
    my ($srv, $key) = @_;
    my $r = usage($srv, $key);
    return $r->{json} if $r->{status} == 200 && ref $r->{json} eq 'HASH';
    Test::More::fail("the usage answer for $key: 200 with a JSON object");
    Test::More::diag("$r->{status}: " . substr($r->{body}, 0, 300));
    return {};
}

# concurrent_requests.in_flight of $key right now (undef when the answer has none).
sub in_flight {
    my ($srv, $key) = @_;
    my $j = usage_quiet($srv, $key) or return undef;
    return ref $j->{concurrent_requests} eq 'HASH' ? $j->{concurrent_requests}{in_flight} : undef;
}

# The usage answer's token window of $key with that per ('5s', '1d'), or undef.
sub token_window {
    my ($srv, $key, $per) = @_;
    my $u = usage_quiet($srv, $key) or return undef;
    my ($w) = grep { ref $_ eq 'HASH' && ($_->{per} // '') eq $per } @{ ref $u->{tokens} eq 'ARRAY' ? $u->{tokens} : [] };
    return $w;
}

# Test: that window's used reaches $want (the charge comes in the LOG phase, after the
# response, so this waits up to 3 s).
sub used_is {
    my ($srv, $key, $per, $want, $name) = @_;
    my $w;
    wait_until(sub { $w = token_window($srv, $key, $per); $w && ($w->{used} // -1) == $want }, 3);
    Test::More::is($w ? $w->{used} : undef, $want, "$name: $key used $want in its $per window");
}

# Polls $cond every 50 ms until it is true or $timeout seconds pass; returns its last value.
sub wait_until {
    my ($cond, $timeout) = @_;
    my $deadline = time + ($timeout // 5);
    while (1) {
        my $v = $cond->();
        return $v if $v || time > $deadline;
        sleep 0.05;
    }
}

# The mock's counts for NAME: {now, max, total}.
sub mock_inflight {
    my ($name) = @_;
    my $all = $JSON->decode(RG::mock_http('GET', '/__mock/inflight'));
    return $all->{group($name)} // { now => 0, max => 0, total => 0 };
}

# The access-log line of the request tagged $tag as {tag, key, rg, status}; waits for it (the
# LOG phase can come after the client saw the end). undef after $timeout seconds.
sub log_line {
    my ($srv, $tag, $timeout) = @_;
    return $srv->tagged_log_line('limits.log', $tag, $timeout);
}

# $relay_guard_status of a response, from its access-log line ('' when not logged).
sub rg_status {
    my ($srv, $r) = @_;
    my $l = log_line($srv, $r->{tag});
    return $l ? $l->{rg} : '';
}

# --- refusals --------------------------------------------------------------------------------

# Tests: $r is the refusal of limit $limit (rpm | concurrency | tokens) as the spec says it:
# 429, application/json, exactly {"type":"error","error":{"type":"rate_limit_error","message"}}
# with the keys-file name of the limit in the message, retry-after whole seconds >= 1 (and in
# [$o{min}, $o{max}] when given), x-should-retry true iff retry-after <= 60, and the status in
# X-RG-Status and in the access log. Returns retry-after.
sub refused {
    my ($srv, $r, $limit, $name, %o) = @_;
    my $ok = Test::More::is($r->{status}, 429, "$name: 429");
    Test::More::like($r->{headers}{'content-type'} // '', qr{^application/json\b}, "$name: content-type application/json");
    my $j = eval { $JSON->decode($r->{body}) };
    my $shape = ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
        && join(',', sort keys %$j) eq 'error,type' && join(',', sort keys %{ $j->{error} }) eq 'message,type'
        && ($j->{type} // '') eq 'error' && ($j->{error}{type} // '') eq 'rate_limit_error'
        && defined $j->{error}{message} && !ref $j->{error}{message};
    Test::More::ok($shape, "$name: body is Anthropic's rate_limit_error shape") or Test::More::diag($r->{body});
    Test::More::like($shape ? $j->{error}{message} : '', qr/\b\Q$FIELD{$limit}\E\b/,
                     "$name: the message names $FIELD{$limit}");
    my $ra = $r->{headers}{'retry-after'} // '';
    Test::More::like($ra, qr/^[1-9][0-9]*$/, "$name: retry-after is whole seconds >= 1 ($ra)");
    $ra = $ra =~ /^\d+$/ ? $ra : -1;
    Test::More::cmp_ok($ra, '>=', $o{min}, "$name: retry-after >= $o{min}") if defined $o{min};
    Test::More::cmp_ok($ra, '<=', $o{max}, "$name: retry-after <= $o{max}") if defined $o{max};
    Test::More::is($r->{headers}{'x-should-retry'} // '', $ra >= 0 && $ra <= 60 ? 'true' : 'false',
                   "$name: x-should-retry follows retry-after $ra");
    Test::More::is($r->{headers}{'x-rg-status'} // '', $STATUS{$limit}, "$name: X-RG-Status $STATUS{$limit}");
    Test::More::is(rg_status($srv, $r), $STATUS{$limit}, "$name: \$relay_guard_status $STATUS{$limit} in the access log");
    return $ra;
}

# Test: $r was admitted and relayed (200 from the mock, status OK).
sub admitted {
    my ($srv, $r, $name, $want) = @_;
    $want //= 'OK';
    my $ok = Test::More::is($r->{status} . ' ' . ($r->{headers}{'x-rg-status'} // ''), "200 $want", "$name: 200 $want");
    Test::More::diag(substr($r->{body}, 0, 300)) unless $ok;
    return $ok;
}

# relay_guard_limited_total{key,limit} in a metrics snapshot.
sub limited { my ($snap, $key, $limit) = @_; RG::Metrics::val($snap, 'relay_guard_limited_total', key => $key, limit => $limit) }

# The info lines of refusals of $key by $field in $log. The spec's example is `relay_guard: key
# "alice" refused: requests_per_minute limit (...)` and it asks for "refused" and the limit name:
# an [info] line from relay_guard with the key id in quotes, "refused" and the field's name.
sub refusal_lines {
    my ($log, $key, $field) = @_;
    return scalar grep { /\[info\]/ && /\brelay_guard: / && /"\Q$key\E"/ && /\brefused\b/ && /\b\Q$field\E\b/ }
                 split /\n/, $log;
}

# --- time ------------------------------------------------------------------------------------

sub iso { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) }

# Unix seconds of an ISO 8601 UTC time as the usage answer writes it; undef when it is not one.
sub epoch_of {
    my ($s) = @_;
    return undef unless defined $s && !ref $s
        && $s =~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z$/;
    return timegm($6, $5, $4, $3, $2 - 1, $1);
}

# Waits until a window of $per seconds (aligned to multiples since the epoch) has just begun,
# unless one began less than $slack (default 0.3) seconds ago; returns that window's start.
sub align {
    my ($per, $slack) = @_;
    my $into = time - floor(time / $per) * $per;
    sleep($per - $into + 0.05) if $into > ($slack // 0.3);
    return floor(time / $per) * $per;
}

# --- the server ------------------------------------------------------------------------------

# The worker pids once all $n run (start returns when nginx listens, before the fork).
sub workers {
    my ($srv, $n) = @_;
    for (1 .. 200) {
        my @w = eval { $srv->worker_pids };
        return \@w if @w == $n;
        sleep 0.05;
    }
    die "nginx did not start $n workers: " . $srv->error_log;
}

# Starts nginx again on the same prefix after stop: unlike RG::Server::start it keeps the
# prefix (logs, and whatever state the test put there). Dies when nginx does not start.
sub restart {
    my ($srv) = @_;
    my $root = $srv->root;
    # What nginx prints while it starts (the state file's warnings) is in error.log too; kept
    # out of the test's output.
    open my $saved, '>&', \*STDERR or die "dup stderr: $!";
    open STDERR, '>>', "$root/logs/start.stderr" or die "$root/logs/start.stderr: $!";
    my $rc = system(RG::Server::nginx_cmd(), '-p', "$root/", '-c', "$root/conf/nginx.conf");
    open STDERR, '>&', $saved or die "restore stderr: $!";
    $rc == 0 or die "nginx failed to start again: " . (slurp("$root/logs/start.stderr") // '') . $srv->error_log;
    $srv->wait_port;
    workers($srv, $srv->{workers});
    return $srv;
}

# Stops nginx with $signal (QUIT: graceful, as `nginx -s quit`; TERM: `nginx -s stop`) and waits
# until the master is gone (it writes the state file on its way out).
sub stop_with {
    my ($srv, $signal) = @_;
    my $m = eval { $srv->master_pid } or return;
    kill $signal, $m;
    for (1 .. 200) { return 1 unless RG::Server::alive($m); sleep 0.05 }
    die "nginx master $m did not exit after $signal";
}

# Test: no worker crashed and nothing at alert or worse since byte $from of the error log;
# lines matching $allow (a regex) are left out (a failed write the test provoked on purpose).
sub no_crash {
    my ($srv, $name, $from, $allow) = @_;
    my $log = substr($srv->error_log, $from // 0);
    $log = join "\n", grep { $_ !~ $allow } split /\n/, $log if $allow;
    Test::More::unlike($log, qr/exited on signal|\[(alert|crit)\]|panic/, "$name: no crash, alert or panic in the error log");
}

1;
