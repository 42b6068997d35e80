# 20 HUP reloads under steady signed and token load on two workers: no request fails but for
# nginx's own idle keep-alive closes (defined and proved one by one in t/lib/RG/Load.pm), no
# replay is admitted, no metrics series ever goes down, and every answered request is counted
# once. Uses RG::Server (reloads mid-test) and RG::Load (forked keep-alive clients); the
# upstream is a server of the nginx under test, so no fixed port or mock is involved.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use Time::HiRes qw(time sleep);
use RG;
use RG::Server;
use RG::Load;
use RG::Metrics ();

my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';
my $RELOADS = $ENV{RG_RELOADS} // 20;

my $up = RG::Server::free_port();
# Under valgrind (TEST_NGINX_USE_VALGRIND) each reload takes seconds, so the run lasts longer
# than the default ±30 s window and the final replays of the first captured requests would be
# refused as STALE before their nonce is looked up: widen it there (the window is tested in t/004).
my $http = RG::Load::relay_conf(upstream => $up, data => $data,
    $ENV{TEST_NGINX_USE_VALGRIND} ? (server => '        relay_guard_clock_skew 300s;') : ());

my $srv = RG::Server->new(name => 'reload-load', workers => 2);
$srv->start($http);
my $port = $srv->port;
my $dir = File::Temp::tempdir('rg-reload-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $t0 = time;

my $m0 = RG::Metrics::snap($srv);
my $load = RG::Load::spawn(dir => $dir, seconds => 60, clients => [
    { kind => 'signed', port => $port, tag => 's1' },
    { kind => 'signed', port => $port, tag => 's2' },
    { kind => 'token',  port => $port, tag => 't1' },
    { kind => 'scrape', port => $port, path => '/metrics' },
]);
sleep 0.5;

# Before each reload the test admits one signed request of its own (bob) and replays it once
# the new workers have taken over; all of them are replayed again at the end.
my (@captured, @cross, @worker_sets, @windows);
push @worker_sets, join ' ', $srv->worker_pids;
for my $i (1 .. $RELOADS) {
    my $req = RG::Load::signed_request(key_id => 'bob', secret => $RG::Metrics::SECRETS{bob},
                                       id => "ctl-$i");
    my $r = RG::Load::once($port, $req->{bytes});
    push @captured, $req if ($r->{status} // 0) == 200;
    my $start = time;
    $srv->reload;
    push @windows, [$start, time];
    push @worker_sets, join ' ', $srv->worker_pids;
    my $replay = RG::Load::once($port, RG::Load::with_id($req->{bytes}, "ctl-$i-replay"));
    push @cross, [$i, $replay->{status}, $replay->{headers}{'x-rg-status'}];
    sleep 0.1;
}
sleep 0.3;
my $rows = $load->stop;
my @final = map { RG::Load::once($port, RG::Load::with_id($_->{bytes}, 'ctl-final')) } @captured;

my %uniq_sets = map { $_ => 1 } @worker_sets;
is(scalar keys %uniq_sets, $RELOADS + 1, "$RELOADS reloads, each replaced both workers");
is(scalar @captured, $RELOADS, 'every request the test signed before a reload was admitted');
is(scalar(grep { ($_->[1] // 0) == 401 && ($_->[2] // '') eq 'REPLAY' } @cross), $RELOADS,
   'each replayed after its reload: 401 REPLAY')
    or diag(explain [grep { ($_->[2] // '') ne 'REPLAY' } @cross]);
is(scalar(grep { ($_->{status} // 0) == 401 && ($_->{headers}{'x-rg-status'} // '') eq 'REPLAY' } @final),
   $RELOADS, "all $RELOADS replayed again after the last reload: 401 REPLAY");

my @errors = grep { $_->[0] eq 'error' } @$rows;
is(scalar @errors, 0, 'no load client died') or diag(explain \@errors);
is(scalar(grep { $_->[0] eq 'end' } @$rows), 4, 'every client stopped when told');

my @reqs = grep { $_->[0] ne 'scrape' && $_->[0] ne 'end' && $_->[0] ne 'error' } @$rows;
my %by;
push @{ $by{"$_->[1]:$_->[2]"} }, $_ for @reqs;
my $n = sub { scalar @{ $by{$_[0]} || [] } };
my %pids = map { $_->[7] => 1 } grep { $_->[7] } @reqs;
diag(sprintf '%d requests in %.1f s: %d signed, %d replays, %d token; %d worker pids answered;'
     . ' %d idle keep-alive closes (signed %d, replay %d, token %d)',
     scalar @reqs, time - $t0, $n->('signed:ok'), $n->('replay:ok'), $n->('token:ok'),
     scalar keys %pids, $n->('signed:ka_close') + $n->('replay:ka_close') + $n->('token:ka_close'),
     $n->('signed:ka_close'), $n->('replay:ka_close'), $n->('token:ka_close'));
cmp_ok($n->('signed:ok'), '>=', 100, 'signed traffic flowed');
cmp_ok($n->('token:ok'), '>=', 100, 'token traffic flowed');
cmp_ok($n->('replay:ok'), '>=', 20, 'replays of admitted requests were sent');
cmp_ok(scalar keys %pids, '>=', $RELOADS, 'answers came from the workers of most generations');

my @failed = grep { $_->[2] eq 'fail' } @reqs;
is(scalar @failed, 0, '0 failed requests (idle keep-alive closes counted apart)')
    or diag(explain [@failed[0 .. ($#failed < 9 ? $#failed : 9)]]);
my %want = (signed => [200, 'OK'], token => [200, 'OK'], replay => [401, 'REPLAY'],
            'signed-resent' => [200, 'OK'], 'token-resent' => [200, 'OK'],
            'replay-resent' => [401, 'REPLAY']);
my @wrong = grep { $_->[2] eq 'ok' && ("$_->[3] $_->[4]" ne "@{ $want{$_->[1]} }") } @reqs;
is(scalar @wrong, 0, 'every answer was the expected one (200 OK; replays 401 REPLAY)')
    or diag(explain [@wrong[0 .. ($#wrong < 9 ? $#wrong : 9)]]);
is(scalar(grep { $_->[1] =~ /^replay/ && ($_->[3] || 0) == 200 } @reqs), 0, '0 replays admitted');

# Each idle keep-alive close, proved: the request never reached the upstream, and its resent
# copy (same signature and nonce) got the answer a first sending gets.
my $ids = RG::Load::upstream_ids($srv);
my @ka = grep { $_->[2] eq 'ka_close' } @reqs;
my @reached = grep { $ids->{$_->[0]} } @ka;
is(scalar @reached, 0, 'no idle-closed request reached the upstream') or diag(explain \@reached);
# The ka_close time is taken when the client saw the close; 0.2 s covers its own lag.
my @outside = grep { my $t = $_->[9]; !grep { $t >= $_->[0] && $t <= $_->[1] + 0.2 } @windows } @ka;
is(scalar @outside, 0, 'every idle keep-alive close happened while a reload replaced the workers')
    or diag(explain \@outside);
cmp_ok(scalar @ka, '<=', 3 * $RELOADS, 'at most one per client connection and reload');
my %resent = map { $_->[0] => $_ } grep { $_->[1] =~ /-resent$/ } @reqs;
my @unproved = grep { !$resent{"$_->[0]-resent"} || $resent{"$_->[0]-resent"}[2] ne 'ok' } @ka;
is(scalar @unproved, 0, 'each idle-closed request was resent and answered (checked above)')
    or diag(explain \@unproved);
my @lost = grep { ($_->[3] || 0) == 200 && ($ids->{$_->[0]} // 0) != 1 } grep { $_->[2] eq 'ok' } @reqs;
is(scalar @lost, 0, 'every admitted request reached the upstream exactly once');

# Metrics: the scraper compared every series with its previous value, across the reloads.
my @scr = grep { $_->[0] eq 'scrape' } @$rows;
my @down = grep { $_->[1] eq 'decrease' } @scr;
cmp_ok(scalar(grep { $_->[1] eq 'ok' } @scr), '>=', $RELOADS, 'metrics scraped throughout');
is(scalar(grep { $_->[1] eq 'fail' } @scr), 0, 'every scrape answered 200');
is(scalar @down, 0, 'no series ever decreased between scrapes') or diag(explain \@down);

# Every answer the clients saw is counted exactly once: the LOG phase runs after the response
# is sent, so wait briefly for the last ones.
my $count = sub {
    my ($what, $status) = @_;
    return scalar grep { $_->[1] =~ /^\Q$what\E(-resent)?$/ && $_->[2] eq "ok" && ($_->[3] || 0) == $status } @reqs;
};
my %expect = (
    'relay_guard_requests_total{class="2xx",key="alice"}' => $count->('signed', 200),
    'relay_guard_requests_total{class="2xx",key="team-a"}' => $count->('token', 200),
    'relay_guard_requests_total{class="2xx",key="bob"}' => scalar @captured,
    'relay_guard_auth_total{key="-",outcome="REPLAY"}' => $count->('replay', 401) + @cross + @final,
);
my ($m1, %got);
for (1 .. 30) {
    $m1 = RG::Metrics::snap($srv);
    $got{$_} = ($m1->{$_} // 0) - ($m0->{$_} // 0) for keys %expect;
    last unless grep { $got{$_} != $expect{$_} } keys %expect;
    sleep 0.1;
}
is($got{$_}, $expect{$_}, "$_ grew by exactly the $expect{$_} answers seen") for sort keys %expect;

unlike($srv->error_log, qr/\[(emerg|alert|crit)\]/, 'no emerg/alert/crit in the error log');
$srv->stop;
diag(sprintf 'took %.1f s', time - $t0);
done_testing();
