# Per-key requests per minute (issue 13): GCRA, so a key may send `burst` requests at once and
# then one every 60/rpm seconds; in any t seconds at most burst + floor(t*rpm/60) are admitted,
# across both workers. Refusals are 429 rate_limit_error with the real retry-after, counted in
# relay_guard_limited_total and logged at info at most once per key per second. Also what
# applies to which key (default_limits, a key's own limits replacing them whole, "limits": {}),
# relay_guard_limits off and dry run. Small rpm values (6 a minute: one per 10 s) make counts
# exact on a slow machine; rpm 60 (one per second) tests recovery with short waits.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use POSIX ();
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Load ();
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

my $dir = File::Temp::tempdir('rg-limits-rpm-XXXXXX', TMPDIR => 1, CLEANUP => 1);
RG::Limits::write_keys("$dir/keys.json",
    default_limits => { requests_per_minute => 6, burst => 1, concurrent_requests => 1 },
    keys => [
        alice     => { requests_per_minute => 6, burst => 1 },
        slow      => { requests_per_minute => 6, burst => 3 },
        burstdef  => { requests_per_minute => 3 },
        fast      => { requests_per_minute => 60, burst => 2 },
        shared    => { requests_per_minute => 6, burst => 4 },
        flood     => { requests_per_minute => 60, burst => 3 },
        dflt      => undef,
        own       => { concurrent_requests => 5 },
        none      => {},
        off       => { requests_per_minute => 6, burst => 1 },
        dry       => { requests_per_minute => 6, burst => 2 },
        log1      => { requests_per_minute => 6, burst => 1 },
        log2      => { requests_per_minute => 6, burst => 1 },
    ]);

my $srv = RG::Server->new(name => 'limits-rpm', workers => 2);
$srv->start(RG::Limits::http_conf(keys => "$dir/keys.json"));
my $workers = RG::Limits::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
sub send_as { my ($key, %o) = @_; RG::Limits::messages($srv, key => $key, inflight => $key, %o) }
*refused = \&RG::Limits::refused;
*admitted = \&RG::Limits::admitted;
*limited = \&RG::Limits::limited;

subtest 'burst requests at once, then 429 with retry-after until the next one' => sub {
    my $b = snap();
    my $t0 = time;
    admitted($srv, send_as('slow'), "slow request $_ of the burst of 3") for 1 .. 3;
    # One request every 10 s after the burst: the next is admitted 10 s after the first.
    for my $i (1 .. 2) {
        my $ra = refused($srv, send_as('slow'), 'rpm', "slow request " . (3 + $i),
                         min => 1, max => 10);
        my $want = POSIX::ceil($t0 + 10 - time);
        cmp_ok(abs($ra - $want), '<=', 1, "retry-after $ra is the time until the GCRA admits (~$want s)");
    }
    is(RG::Limits::mock_inflight('slow')->{total}, 3, 'only the 3 admitted reached the upstream');
    my $a = snap();
    is(limited($a, 'slow', 'rpm') - limited($b, 'slow', 'rpm'), 2, 'relay_guard_limited_total{key="slow",limit="rpm"} += 2');
    is(limited($a, 'slow', $_) - limited($b, 'slow', $_), 0, "... and limit=\"$_\" unchanged") for qw(concurrency tokens);
    is(RG::Metrics::delta($b, $a, 'relay_guard_limited_total', key => 'alice', limit => 'rpm'), 0, 'no other key counted');
};

subtest 'burst defaults to requests_per_minute' => sub {
    admitted($srv, send_as('burstdef'), "burstdef request $_ of 3") for 1 .. 3;
    refused($srv, send_as('burstdef'), 'rpm', 'burstdef request 4 (3 a minute: next in 20 s)', min => 18, max => 20);
};

subtest 'signed keys are limited like token keys; unverified requests are not admitted at all' => sub {
    # Requests that claim alice but do not verify must not spend her limit (admission only for
    # Outcome OK): with burst 1, any of them counted would refuse her first real request.
    for my $i (1 .. 3) {
        my $body = RG::Limits::body();
        my $h = RG::sign_headers(key_id => 'alice', secret => 'not-alices-secret-0123', method => 'POST',
                                 target => '/v1/messages', body => $body) . "content-type: application/json\n";
        my $r = $srv->request('POST', '/v1/messages', $h, $body);
        is("$r->{status} " . ($r->{headers}{'x-rg-status'} // ''), '401 BAD_SIGNATURE', "a forged request claiming alice ($i): 401");
    }
    my ($bytes) = RG::Limits::request_bytes(key => 'alice');
    my $first = RG::Load::once($srv->port, $bytes);
    is("$first->{status} " . ($first->{headers}{'x-rg-status'} // ''), '200 OK', 'alice (signature) request 1: 200 OK');
    my $replay = RG::Load::once($srv->port, $bytes);
    is("$replay->{status} " . ($replay->{headers}{'x-rg-status'} // ''), '401 REPLAY', 'its replay: 401 REPLAY, not a limit');
    refused($srv, send_as('alice'), 'rpm', 'alice request 2', min => 9, max => 10);
};

subtest 'recovery: one request per 60/rpm seconds, the whole burst after burst*60/rpm' => sub {
    admitted($srv, send_as('fast'), "fast request $_ of the burst of 2") for 1 .. 2;
    is(refused($srv, send_as('fast'), 'rpm', 'fast request 3'), 1, 'retry-after 1 (60 a minute)');
    sleep 1.05;
    admitted($srv, send_as('fast'), 'after 1 s: one more admitted');
    refused($srv, send_as('fast'), 'rpm', 'after 1 s: the next refused again', max => 1);
    sleep 2.1;
    admitted($srv, send_as('fast'), "after 2 s more: burst request $_ of 2") for 1 .. 2;
    refused($srv, send_as('fast'), 'rpm', 'after 2 s more: the third refused', max => 1);
};

subtest 'two workers share one limit' => sub {
    my (%pids, $ok, $no);
    for (1 .. 12) {
        my $r = send_as('shared');
        $pids{$r->{headers}{'x-pid'} // '?'}++;
        $r->{status} == 200 ? $ok++ : $r->{status} == 429 ? $no++ : diag("unexpected $r->{status}");
    }
    is(scalar(grep { my $p = $_; grep { $_ eq $p } @$workers } keys %pids), 2,
       'the 12 requests (new connections each) were answered by both workers');
    is($ok // 0, 4, 'exactly the burst of 4 admitted in all (one shared GCRA state, not one per worker)');
    is($no // 0, 8, 'the other 8 refused');
    is(RG::Limits::mock_inflight('shared')->{total}, 4, 'the upstream saw exactly 4');
};

subtest 'concurrent clients on two workers: at most burst + floor(t*rpm/60) in t seconds' => sub {
    my $clients = 4;
    my $seconds = 3;
    my $out = "$dir/flood";
    my @kids;
    my $t_start = time;
    for my $c (1 .. $clients) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open my $f, '>', "$out-$c" or POSIX::_exit(1);
            my $end = $t_start + $seconds;
            while (time < $end) {
                my $t1 = time;
                my $r = eval { RG::Limits::messages($srv, key => 'flood', inflight => 'flood', timeout => 5) };
                printf $f "%s %.6f %.6f %s\n", ($r ? $r->{status} : 0), $t1, time, ($r && $r->{headers}{'x-pid'}) // '-';
                sleep 0.005;
            }
            close $f;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    waitpid($_, 0) for @kids;
    my @rows;
    for my $c (1 .. $clients) {
        open my $f, '<', "$out-$c" or next;
        push @rows, map { [split ' '] } <$f>;
    }
    my @ok = grep { $_->[0] == 200 } @rows;
    my @other = grep { $_->[0] != 200 && $_->[0] != 429 } @rows;
    my ($first, $last_send, $last_recv) = (9e99, 0, 0);
    for (@rows) { $first = $_->[1] if $_->[1] < $first; $last_send = $_->[1] if $_->[1] > $last_send;
                  $last_recv = $_->[2] if $_->[2] > $last_recv }
    my $t = $last_recv - $first;
    my $max = 3 + POSIX::floor($t);
    my %pids = map { $_->[3] => 1 } @rows;
    diag(sprintf '%d requests in %.2f s from %d clients: %d admitted, %d answered by %d workers',
         scalar @rows, $t, $clients, scalar @ok, scalar @rows, scalar(keys %pids));
    is(scalar @other, 0, 'every answer was 200 or 429');
    cmp_ok(scalar @rows, '>=', 40, 'the clients sent many requests');
    cmp_ok(scalar(keys %pids), '>=', 2, 'both workers answered');
    cmp_ok(scalar @ok, '<=', $max, "admitted <= burst + floor(t*rpm/60) = $max");
    cmp_ok(scalar @ok, '>=', 3 + POSIX::floor($last_send - $first) - 1,
           'and the limit admitted as it refilled (not less than one a second after the burst)');
    is(RG::Limits::mock_inflight('flood')->{total}, scalar @ok, 'the upstream saw exactly the admitted ones');
};

subtest 'default_limits, a key\'s own limits (replacing them whole), and "limits": {}' => sub {
    admitted($srv, send_as('dflt'), 'dflt (default_limits: burst 1) request 1');
    # The slot frees when nginx frees the request, just after the response: a slow nginx
    # (valgrind) may not have yet, and the concurrency limit would answer first.
    RG::Limits::wait_until(sub { RG::Limits::usage_json($srv, 'dflt')->{concurrent_requests}{in_flight} == 0 }, 5);
    refused($srv, send_as('dflt'), 'rpm', 'dflt request 2');
    admitted($srv, send_as('own'), "own (only concurrent_requests, no rpm) request $_") for 1 .. 5;
    admitted($srv, send_as('none'), "none ({}) request $_") for 1 .. 5;
    my $own = RG::Limits::usage_json($srv, 'own');
    is($own->{requests_per_minute}, undef, 'own: requests_per_minute null (the default did not merge in)');
    is(ref $own->{concurrent_requests} eq 'HASH' && $own->{concurrent_requests}{limit}, 5, 'own: its concurrent_requests 5');
    my $none = RG::Limits::usage_json($srv, 'none');
    is_deeply([@$none{qw(requests_per_minute concurrent_requests tokens)}], [undef, undef, []], 'none: no limits at all');
    my $d = RG::Limits::usage_json($srv, 'dflt');
    is_deeply(ref $d->{requests_per_minute} eq 'HASH' ? [@{ $d->{requests_per_minute} }{qw(limit burst)}] : undef,
              [6, 1], 'dflt: the default\'s requests_per_minute 6, burst 1');
    is(ref $d->{concurrent_requests} eq 'HASH' && $d->{concurrent_requests}{limit}, 1, 'dflt: the default\'s concurrent_requests 1');
};

subtest 'relay_guard_limits off: no admission and no charge in that location' => sub {
    my $b = snap();
    admitted($srv, send_as('off', path => '/nolimits/v1/messages'), "off, limits off: request $_") for 1 .. 5;
    my $u = RG::Limits::usage_json($srv, 'off');
    is(ref $u->{requests_per_minute} eq 'HASH' && $u->{requests_per_minute}{remaining}, 1,
       'the five did not move the rpm state: remaining still 1');
    is(limited(snap(), 'off', 'rpm') - limited($b, 'off', 'rpm'), 0, 'nothing counted as limited');
    admitted($srv, send_as('off', path => '/nolimits/on/v1/messages'), 'relay_guard_limits on in a nested location: request 1');
    refused($srv, send_as('off', path => '/nolimits/on/v1/messages'), 'rpm', 'nested location: request 2');
    refused($srv, send_as('off'), 'rpm', 'and in / as well');
};

subtest 'dry run: refusals counted and shown, the request relayed, the rpm state not moved' => sub {
    my $b = snap();
    my $t0 = time;
    my @r = map { send_as('dry', path => '/dry/v1/messages') } 1 .. 5;
    is_deeply([map { $_->{status} } @r], [(200) x 5], 'all five relayed: 200');
    is_deeply([map { RG::Limits::rg_status($srv, $_) } @r],
              [('DRY_RUN_OK') x 2, ('DRY_RUN_LIMIT_RPM') x 3], '$relay_guard_status: 2 DRY_RUN_OK, then DRY_RUN_LIMIT_RPM');
    is($r[4]{headers}{'x-rg-status'}, 'DRY_RUN_LIMIT_RPM', 'X-RG-Status DRY_RUN_LIMIT_RPM');
    is(RG::Limits::mock_inflight('dry')->{total}, 5, 'the upstream saw all five');
    is(limited(snap(), 'dry', 'rpm') - limited($b, 'dry', 'rpm'), 3, 'relay_guard_limited_total{key="dry",limit="rpm"} += 3');
    # Two admitted from a full burst of 2 at 6 a minute: full again 20 s after the first. Had the
    # three dry-run refusals moved the state, that would be 50 s.
    my $u = RG::Limits::usage_json($srv, 'dry');
    my $rpm = ref $u->{requests_per_minute} eq 'HASH' ? $u->{requests_per_minute} : {};
    is($rpm->{remaining}, 0, 'usage: remaining 0');
    my $full = RG::Limits::epoch_of($rpm->{full_at});
    ok(defined $full && $full <= $t0 + 21 && $full >= $t0 + 18, 'usage: full_at 20 s after the first (refusals moved nothing)')
        or diag("full_at $rpm->{full_at}, t0 " . RG::Limits::iso($t0));
    refused($srv, send_as('dry'), 'rpm', 'dry key in an enforcing location', max => 10);
};

subtest 'the info log line: once per key per second at most, each key its own' => sub {
    admitted($srv, send_as($_), "$_ request 1") for qw(log1 log2);
    my $from = length $srv->error_log;
    my $t0 = time;
    for (1 .. 15) {
        is(send_as($_)->{status}, 429, "$_ refused") for qw(log1 log2);
    }
    my $e = time - $t0;
    sleep 0.2;
    my $log = substr($srv->error_log, $from);
    for my $k (qw(log1 log2)) {
        my $n = RG::Limits::refusal_lines($log, $k, 'requests_per_minute');
        cmp_ok($n, '>=', 1, "$k: logged at info (relay_guard: key \"$k\" refused: requests_per_minute limit)");
        cmp_ok($n, '<=', POSIX::floor($e) + 2, sprintf('%s: %d lines for 15 refusals in %.2f s (at most one a second)', $k, $n, $e));
    }
    sleep 1.1;
    $from = length $srv->error_log;
    is(send_as('log1')->{status}, 429, 'log1 refused a second later');
    sleep 0.2;
    is(RG::Limits::refusal_lines(substr($srv->error_log, $from), 'log1', 'requests_per_minute'), 1,
       'a second later: logged again, once');
};

subtest 'relay_guard_limited_total in the exposition: a counter Prometheus accepts' => sub {
    plan skip_all => "no $RG::Metrics::PYTHON (run scripts/setup)" unless -x $RG::Metrics::PYTHON;
    my $r = RG::Metrics::scrape($srv);
    like($r->{body}, qr/^# TYPE relay_guard_limited_total counter$/m, 'TYPE counter');
    like($r->{body}, qr/^relay_guard_limited_total\{key="slow",limit="rpm"\} 2$/m, 'the series of one key and limit');
    my ($rc, $out) = RG::Metrics::check_exposition($r->{body}, 'relay_guard_limited_total');
    is($rc, 0, 'check_prometheus.py accepts it') or diag($out);
};

RG::Limits::no_crash($srv, 'after all');
is_deeply(RG::Limits::workers($srv, 2), $workers, 'the same workers still run');
$srv->stop;
done_testing();
