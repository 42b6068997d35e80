# Metrics as deployed: two workers adding to one set of counters in the shared zone, every error
# class counted where it belongs, SSE completeness, the exposition accepted by Prometheus's own
# parser, and counters kept across HUP reloads. Test::Nginx::Socket cannot express loops over
# workers or reloads mid-test, so this uses t/lib/RG/Server.pm (plus t/lib/RG/Metrics.pm to scrape
# and diff) with plain Test::More. Every check compares two scrapes, so the subtests do not
# depend on each other's traffic.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use RG;
use RG::Server;
use RG::Metrics qw();

my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';
plan skip_all => "no $RG::Metrics::PYTHON (run scripts/setup)" unless -x $RG::Metrics::PYTHON;

# A port nothing listens on: bind one, then close it.
my $closed = do {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1', LocalPort => 0) or die $!;
    my $p = $s->sockport;
    close $s;
    $p;
};

my $http = <<"EOC";
    relay_guard_zone rg:1m;
    relay_guard_keys $data/keys.json;
    upstream down_then_mock {
        server 127.0.0.1:$closed max_fails=0;
        server 127.0.0.1:$mock backup;
    }
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            relay_guard any;
            add_header X-Pid \$pid always;
            add_header X-RG-Status \$relay_guard_status always;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 10s;
            proxy_pass http://127.0.0.1:$mock;
        }
        location /down/ {
            relay_guard any;
            proxy_pass http://127.0.0.1:$closed/;
        }
        location /next/ {
            relay_guard any;
            proxy_next_upstream error timeout;
            proxy_pass http://down_then_mock/;
        }
        location /slow/ {
            relay_guard any;
            proxy_read_timeout 300ms;
            proxy_pass http://127.0.0.1:$mock/;
        }
        location /plain/ {
            proxy_pass http://127.0.0.1:$mock/;
        }
        location /unguarded/ {
            relay_guard off;
            proxy_pass http://127.0.0.1:$mock/;
        }
        location = /metrics {
            relay_guard off;
            relay_guard_metrics;
        }
    }
EOC

my $srv = RG::Server->new(name => 'metrics', workers => 2);
$srv->start($http);

sub get_models {
    my ($key, %extra) = @_;
    my $h = $key eq 'team-a' ? RG::Metrics::token_headers(undef, %extra)
          : RG::Metrics::signed_headers($key, 'GET', '/v1/models', '', %extra);
    return $srv->request('GET', '/v1/models', $h);
}

sub snap { RG::Metrics::snap($srv) }
*delta = \&RG::Metrics::delta;
*val = \&RG::Metrics::val;

subtest 'counts and histogram buckets after known traffic' => sub {
    my $b = snap();
    my $n_fast = 4;
    my $n_slow = 3;
    for (1 .. $n_fast) {
        is(get_models('bob')->{status}, 200, 'fast request by bob');
    }
    for (1 .. $n_slow) {
        is(get_models('bob', 'x-mock-delay-ms' => 300)->{status}, 200, 'slow (300 ms) request by bob');
    }
    my $a = snap();
    my $n = $n_fast + $n_slow;
    my %bob = (key => 'bob');
    is(delta($b, $a, 'relay_guard_requests_total', %bob, class => '2xx'), $n, "requests_total{class=2xx} += $n");
    is(delta($b, $a, 'relay_guard_auth_total', %bob, outcome => 'OK'), $n, "auth_total{outcome=OK} += $n");
    is(delta($b, $a, 'relay_guard_errors_total', %bob, source => $_), 0, "no errors ($_)")
        for qw(upstream relay);
    ok(delta($b, $a, 'relay_guard_bytes_received_total', %bob) > 0, 'bytes_received_total grew');
    ok(delta($b, $a, 'relay_guard_bytes_sent_total', %bob) >= $n * 100, 'bytes_sent_total grew by the responses');
    for my $h (qw(request_duration upstream_connect upstream_header)) {
        my $f = "relay_guard_${h}_seconds";
        is(delta($b, $a, "${f}_count", %bob), $n, "${f}_count += $n");
        is(delta($b, $a, "${f}_bucket", %bob, le => '+Inf'), $n, "${f}_bucket{le=+Inf} += $n");
        my @les = ('0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '20',
                   '30', '60', '120', '300', '600', '+Inf');
        my @v = map { val($a, "${f}_bucket", %bob, le => $_) } @les;
        my @bad = grep { $v[$_] < $v[$_ - 1] } 1 .. $#v;
        ok(!@bad, "$f buckets cumulative (@v)");
        is(val($a, "${f}_count", %bob), $v[-1], "$f +Inf == _count");
    }
    # Lower bounds on time are certain: the three delayed answers took at least 300 ms, so the
    # le=0.25 bucket of the header time gained at most the fast requests.
    my $f = 'relay_guard_upstream_header_seconds';
    ok(delta($b, $a, "${f}_bucket", %bob, le => '0.25') <= $n_fast,
       "header time le=0.25 gained at most $n_fast (the 300 ms ones are above)");
    ok(delta($b, $a, "${f}_sum", %bob) >= 0.3 * $n_slow - 0.01, "header time _sum grew by >= 0.9 s");
    ok(delta($b, $a, 'relay_guard_request_duration_seconds_sum', %bob) >= 0.3 * $n_slow - 0.01,
       'request time _sum grew by >= 0.9 s');
};

subtest 'two workers add to the same series' => sub {
    my $b = snap();
    my (%pids, $sent);
    while ($sent++ < 200) {
        my $r = get_models('team-a');
        is($r->{status}, 200, "request $sent") or last;
        $pids{$r->{headers}{'x-pid'}}++;
        last if keys %pids >= 2 && $sent >= 20;
    }
    my $a = snap();
    is(scalar keys %pids, 2, 'requests landed on two workers (' . join(', ', map { "$_: $pids{$_}" } sort keys %pids) . ')');
    is(delta($b, $a, 'relay_guard_requests_total', key => 'team-a', class => '2xx'), $sent,
       "one series counts all $sent requests");
    is(delta($b, $a, 'relay_guard_request_duration_seconds_count', key => 'team-a'), $sent,
       'and so does its histogram');
    # Scrapes are served by either worker: read several times, all must agree.
    my %seen = map { val(snap(), 'relay_guard_requests_total', key => 'team-a', class => '2xx') => 1 } 1 .. 6;
    is(scalar keys %seen, 1, 'every worker serves the same numbers (' . join(', ', keys %seen) . ')');
};

subtest 'error classes, each counted in its place' => sub {
    my %ta = (key => 'team-a');
    my $case = sub {
        my ($name, $want_status, $req, %want) = @_;
        my $b = snap();
        my $r = $req->();
        is($r->{status}, $want_status, "$name: client got $want_status");
        my $a = snap();
        is(delta($b, $a, 'relay_guard_responses_total', %ta, status => $want_status), 1,
           "$name: responses_total{status=$want_status} += 1");
        my $class = substr($want_status, 0, 1) . 'xx';
        is(delta($b, $a, 'relay_guard_requests_total', %ta, class => $class), 1,
           "$name: requests_total{class=$class} += 1");
        for my $src (qw(upstream relay)) {
            is(delta($b, $a, 'relay_guard_errors_total', %ta, source => $src), $want{$src} // 0,
               "$name: errors_total{source=$src} += " . ($want{$src} // 0));
        }
    };
    $case->('upstream 429', 429, sub { get_models('team-a', 'x-mock-status' => 429) }, upstream => 1);
    $case->('upstream 529', 529, sub { get_models('team-a', 'x-mock-status' => 529) }, upstream => 1);
    $case->('upstream 500', 500, sub { get_models('team-a', 'x-mock-status' => 500) }, upstream => 1);
    $case->('upstream 502 passed through', 502, sub { get_models('team-a', 'x-mock-status' => 502) }, upstream => 1);
    $case->('upstream 503 passed through', 503, sub { get_models('team-a', 'x-mock-status' => 503) }, upstream => 1);
    $case->('upstream 504 passed through', 504, sub { get_models('team-a', 'x-mock-status' => 504) }, upstream => 1);
    $case->('upstream 429 from the second server after the first was down', 429,
            sub { $srv->request('GET', '/next/v1/models', RG::Metrics::token_headers(undef, 'x-mock-status' => 429)) },
            upstream => 1);
    $case->('relay 502 (upstream down)', 502,
            sub { $srv->request('GET', '/down/v1/models', RG::Metrics::token_headers()) }, relay => 1);
    $case->('relay 504 (upstream too slow)', 504,
            sub { $srv->request('GET', '/slow/v1/models', RG::Metrics::token_headers(undef, 'x-mock-delay-ms' => 2000)) },
            relay => 1);

    my $b = snap();
    is(get_models('team-a', 'x-mock-status' => 404)->{status}, 404, 'upstream 404');
    my $a = snap();
    is(delta($b, $a, 'relay_guard_requests_total', %ta, class => '4xx'), 1, '404: requests_total{class=4xx} += 1');
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_errors_total'), {}, '404: not an error');
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_responses_total'), {}, '404: no exact-status series');
};

subtest 'auth rejections are counted under key="-" by outcome, never as a key' => sub {
    my $b = snap();
    my @cases = (
        [MISSING => ''],
        [BAD_TOKEN => "Authorization: Bearer not-a-known-token-0123456789\n"],
        [BAD_SIGNATURE => RG::sign_headers(key_id => 'alice', secret => 'wrong-secret-0123456789',
                                           method => 'GET', target => '/v1/models')],
        [UNKNOWN_KEY => RG::sign_headers(key_id => 'mallory', secret => 'mallory-secret-0123456789',
                                         method => 'GET', target => '/v1/models')],
        [STALE => RG::sign_headers(key_id => 'alice', method => 'GET', target => '/v1/models', skew => -600)],
    );
    for my $c (@cases) {
        my $r = $srv->request('GET', '/v1/models', $c->[1]);
        is($r->{status}, 401, "$c->[0] -> 401");
        is($r->{headers}{'x-rg-status'}, $c->[0], "... as $c->[0]");
    }
    my $a = snap();
    for my $c (@cases) {
        is(delta($b, $a, 'relay_guard_auth_total', key => '-', outcome => $c->[0]), 1,
           "auth_total{key=\"-\",outcome=$c->[0]} += 1");
    }
    is(delta($b, $a, 'relay_guard_requests_total', key => '-', class => '4xx'), scalar @cases,
       'requests_total{key="-",class=4xx} += ' . scalar @cases);
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_errors_total'), {}, 'a 401 is not an error');
    ok(!grep(/key="(mallory|alice)"/, keys %{ RG::Metrics::changed($b, $a, 'relay_guard_') }),
       'the claimed key ids of rejected requests got no series');
};

subtest 'which requests count: relay locations only, never the scrape itself' => sub {
    my $b = snap();
    is($srv->request('GET', '/plain/v1/models')->{status}, 200, 'a location without relay_guard');
    is($srv->request('GET', '/unguarded/v1/models')->{status}, 200, 'a location with relay_guard off');
    snap() for 1 .. 3;
    my $a = snap();
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_requests_total'),
              { 'relay_guard_requests_total{class="2xx",key="-"}' => 1 },
              'only the relay_guard off request counted, under key="-"; no scrape counted');
    is(delta($b, $a, 'relay_guard_auth_total', key => '-', outcome => 'NONE'), 1, '... with outcome NONE');
};

subtest 'SSE streams: completed, cut and error-event streams' => sub {
    my $body = RG::Metrics::stream_body();
    my $stream = sub {
        my (%extra) = @_;
        return $srv->request('POST', '/v1/messages',
            RG::Metrics::token_headers(undef, 'content-type' => 'application/json',
                                     'x-mock-sse-gap-ms' => 0, %extra), $body);
    };
    my %ta = (key => 'team-a');
    my $run = sub {
        my ($name, $want, %extra) = @_;
        my $b = snap();
        my $r = $stream->(%extra);
        is($r->{status}, 200, "$name: 200");
        like($r->{headers}{'content-type'}, qr{^text/event-stream}, "$name: an event stream");
        # The client can see the end of the response before nginx has run the request's LOG
        # phase (lingering close shuts the socket first), so wait for the count briefly.
        my $want_change = { qq{relay_guard_streams_total{key="team-a",outcome="$want"}} => 1 };
        my $got;
        for (1 .. 30) {
            $got = RG::Metrics::changed($b, snap(), 'relay_guard_streams_total');
            last if keys %$got;
            select(undef, undef, undef, 0.1);
        }
        is_deeply($got, $want_change, "$name: streams_total{outcome=$want} += 1, nothing else");
        return $r;
    };
    my $r = $run->('complete stream', 'completed');
    like(RG::Metrics::dechunk($r), qr/event: message_stop/, 'complete stream: message_stop reached the client');
    $r = $run->('stream cut after 2 deltas', 'upstream_cut', 'x-mock-sse-cut' => 2);
    unlike(RG::Metrics::dechunk($r), qr/event: message_stop/, 'cut stream: no message_stop');
    $r = $run->('stream with an error event', 'error_event', 'x-mock-sse-error' => 1);
    like($r->{body}, qr/event: error/, 'error stream: the error event reached the client');
    $run->('a long stream (500 events) split over many buffers', 'completed', 'x-mock-sse-events' => 500);

    my $b = snap();
    is(get_models('team-a')->{status}, 200, 'a JSON response');
    is_deeply(RG::Metrics::changed($b, snap(), 'relay_guard_streams_total'), {}, '... is not a stream');
};

subtest 'the exposition passes prometheus_client and the histogram invariants' => sub {
    my ($r, $dt) = RG::Metrics::scrape($srv);
    like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4}, 'content type for format 0.0.4');
    my ($rc, $out) = RG::Metrics::check_exposition($r->{body},
        map { "relay_guard_$_" } qw(key_slots_max keys_tracked requests_total responses_total
            errors_total auth_total streams_total bytes_received_total bytes_sent_total
            request_duration_seconds upstream_connect_seconds upstream_header_seconds));
    is($rc, 0, 'check_prometheus.py accepts it') or diag($out);
    like($out, qr/^ok: \d+ families/, 'summary printed') or diag($out);
    ok($dt < 1, sprintf('scrape took %.3f s', $dt));
    my $m = RG::Metrics::parse($r->{body});
    is(val($m, 'relay_guard_key_slots_max'), 256, 'key_slots_max is the default 256');
    is(val($m, 'relay_guard_keys_tracked'), 2, 'keys_tracked: bob and team-a');
    my $head = $srv->request('HEAD', '/metrics');
    is($head->{status}, 200, 'HEAD is allowed');
    is($head->{body}, '', '... without a body');
};

subtest 'the checker itself rejects broken expositions' => sub {
    my $ok = "# TYPE x histogram\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 3\nx_sum 1.5\nx_count 3\n";
    my ($rc) = RG::Metrics::check_exposition($ok);
    is($rc, 0, 'a sound histogram passes');
    for my $bad (
        [ "non-cumulative buckets", $ok =~ s/le="1"\} 2/le="1"} 4/r ],
        [ "+Inf != _count", $ok =~ s/x_count 3/x_count 5/r ],
        [ "no +Inf bucket", $ok =~ s/x_bucket\{le="\+Inf"\} 3\n//r ],
        [ "syntax error", "# TYPE y counter\ny_total{key=\"a} 1\n" ],
        [ "duplicate series", "# TYPE y counter\ny_total{key=\"a\"} 1\ny_total{key=\"a\"} 2\n" ],
    ) {
        my ($rc, $out) = RG::Metrics::check_exposition($bad->[1]);
        isnt($rc, 0, "rejects: $bad->[0]") or diag($out);
        like($out, qr/check_prometheus: /, '... with a message');
    }
};

subtest '?format=html is a summary with the keys and P99; other methods get 405' => sub {
    my $r = RG::Metrics::scrape($srv, '/metrics?format=html');
    like($r->{headers}{'content-type'}, qr{^text/html}, 'text/html');
    like($r->{body}, qr/<html/i, 'an HTML page');
    like($r->{body}, qr{<td>team-a</td>}, 'with a row for team-a');
    like($r->{body}, qr{<td>bob</td>}, 'and for bob');
    like($r->{body}, qr/p99/i, 'and P99 columns');
    $r = RG::Metrics::scrape($srv, '/metrics?x=1&format=html');
    like($r->{body}, qr/<html/i, 'format=html is found among other arguments');
    $r = RG::Metrics::scrape($srv, '/metrics?format=text');
    like($r->{body}, qr/^# HELP/, 'another format value gives the text format');
    for my $m (qw(POST PUT DELETE)) {
        is($srv->request($m, '/metrics', '', 'x')->{status}, 405, "$m -> 405");
    }
};

subtest 'counters survive nginx -s reload (HUP), twice' => sub {
    my $b = snap();
    my $before = val($b, 'relay_guard_requests_total', key => 'bob', class => '2xx');
    ok($before > 0, "bob has $before requests before the reload");
    my @w0 = $srv->worker_pids;
    $srv->reload;
    my @w1 = $srv->worker_pids;
    isnt("@w1", "@w0", 'workers replaced');
    my $a = snap();
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_'), {}, 'every series unchanged by the reload');
    is(get_models('bob')->{status}, 200, 'a request after the reload');
    my $c = snap();
    is(val($c, 'relay_guard_requests_total', key => 'bob', class => '2xx'), $before + 1,
       'counted on top of the old value');
    $srv->reload;
    my $d = snap();
    is_deeply(RG::Metrics::changed($c, $d, 'relay_guard_'), {}, 'unchanged by a second reload');
    is(val($d, 'relay_guard_keys_tracked'), 2, 'keys_tracked kept');
    is(get_models('team-a')->{status}, 200, 'and a key tracked before the reloads');
    is(delta($d, snap(), 'relay_guard_requests_total', key => 'team-a', class => '2xx'), 1,
       'still counts into its old series');
    unlike($srv->error_log, qr/\[(emerg|alert|crit)\]/, 'no emerg/alert/crit in the error log');
};

$srv->stop;
done_testing();
