# A binary upgrade (USR2 to the master, then QUIT to the old one), as nginx does it, and what it
# does to the zone. The new binary is exec'd by the old master and inherits its listening
# sockets (the NGINX environment variable), so no connection is refused; but it builds its
# cycle from scratch and ngx_shm_alloc() maps every zone afresh (mmap MAP_ANON|MAP_SHARED, see
# src/os/unix/ngx_shmem.c and ngx_init_cycle() in src/core/ngx_cycle.c): shared memory is not
# inherited across exec. So the issue's "a binary upgrade keeps the zone and the nonces" cannot
# hold by nginx's design, and this file pins what does happen: the new generation starts with
# an empty nonce store and zeroed counters, each nonce admitted before the upgrade is admitted
# exactly once more by the new generation (while both generations run, by whichever one the
# connection reaches), and the new zone then works as before. Uses RG::Server and RG::Load.
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
my $bin = $ENV{TEST_NGINX_BINARY} // '';
plan skip_all => 'TEST_NGINX_BINARY must be an absolute path (the master re-executes it)'
    unless $bin =~ m{^/};

my $up = RG::Server::free_port();
my $http = RG::Load::relay_conf(upstream => $up, data => $data);

my $t0 = time;
my $srv = RG::Server->new(name => 'upgrade', workers => 2);
$srv->start($http);
my $port = $srv->port;
my $logs = $srv->root . '/logs';

# The pid file is renamed and rewritten during the upgrade: read it without dying.
sub pid_in {
    my ($file) = @_;
    open my $f, '<', $file or return 0;
    my $p = <$f> // '';
    return $p =~ /^(\d+)/ ? $1 : 0;
}
sub children { my ($m) = @_; my @c = sort grep { /\d/ } map { s/\s//gr } `ps -o pid= --ppid $m`; return @c }
sub wait_until { my ($secs, $cond) = @_; my $end = time + $secs; until ($cond->()) { return 0 if time > $end; sleep 0.05 } 1 }
sub status_of { RG::Load::status_of(@_) }

# Before: bob's signed requests (bob is used only here) and a replay of each, refused.
my @pre = map { RG::Load::signed_request(key_id => 'bob', secret => $RG::Metrics::SECRETS{bob},
                                         id => "pre-$_") } 1 .. 10;
is(scalar(grep { status_of(RG::Load::once($port, $_->{bytes})) eq '200 OK' } @pre), 10,
   'before: 10 signed requests admitted');
is(scalar(grep { status_of(RG::Load::once($port, $_->{bytes})) eq '401 REPLAY' } @pre), 10,
   'before: each replayed once: 401 REPLAY');
my $m_before = RG::Metrics::snap($srv);
is(RG::Metrics::val($m_before, 'relay_guard_requests_total', key => 'bob', class => '2xx'), 10,
   'before: 10 counted for bob');

# Steady load (no replays: the two generations have separate stores) through the upgrade.
my $dir = File::Temp::tempdir('rg-upgrade-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $load = RG::Load::spawn(dir => $dir, seconds => 30, clients => [
    { kind => 'signed', port => $port, tag => 's1', replays => 0 },
    { kind => 'token',  port => $port, tag => 't1' },
]);
sleep 0.3;

my $old = $srv->master_pid;
my @old_workers = children($old);
my $new;
# If this file dies half way, both masters must still go ($srv stops only nginx.pid's).
END { kill 'QUIT', $_ for grep { $_ && kill 0, $_ } $old, $new }
kill 'USR2', $old;
ok(wait_until(10, sub {
    $new = pid_in("$logs/nginx.pid");
    pid_in("$logs/nginx.pid.oldbin") == $old && $new && $new != $old && (my @c = children($new)) == 2 }),
   "USR2: a new master ($new) with two workers; the old one ($old) in nginx.pid.oldbin");
my @new_workers = children($new);
like($srv->error_log, qr/using inherited sockets from "[\d;]+"/, 'the new master inherited the listening sockets');

# Both generations accept now. Replay each pre-upgrade request once: the old workers refuse
# it, the new ones (an empty store) admit it.
my %gen = ((map { $_ => 'old' } @old_workers), (map { $_ => 'new' } @new_workers));
my (%overlap, %admitted);
for my $i (0 .. $#pre) {
    my $r = RG::Load::once($port, RG::Load::with_id($pre[$i]{bytes}, "overlap-$i"));
    my $g = $gen{ $r->{headers}{'x-pid'} // '' } // 'unknown';
    $overlap{"$g: " . status_of($r)}++;
    $admitted{$i}++ if ($r->{status} // 0) == 200;
}
diag('replays while both generations run: '
     . join(', ', map { "$_ x$overlap{$_}" } sort keys %overlap));
is(($overlap{'old: 401 REPLAY'} // 0) + ($overlap{'new: 200 OK'} // 0), scalar @pre,
   'while both run: refused by old workers, admitted by new ones, nothing else');

kill 'QUIT', $old;
ok(wait_until(10, sub { !kill 0, $old }), 'QUIT: the old master exited');
ok(!-e "$logs/nginx.pid.oldbin", 'and removed nginx.pid.oldbin');
sleep 0.3;
my $rows = $load->stop;

my @reqs = grep { $_->[0] !~ /^(end|error)$/ } @$rows;
my @failed = grep { $_->[2] eq 'fail' } @reqs;
my @ka = grep { $_->[2] eq 'ka_close' } @reqs;
my @wrong = grep { $_->[2] eq 'ok' && "$_->[3] $_->[4]" ne '200 OK' } @reqs;
diag(sprintf '%d requests during the upgrade, %d idle keep-alive closes', scalar @reqs, scalar @ka);
cmp_ok(scalar(@reqs), '>=', 50, 'load ran through the upgrade');
is(scalar @failed, 0, '0 failed requests through USR2 and QUIT') or diag(explain \@failed);
is(scalar @wrong, 0, 'every answer 200 OK') or diag(explain \@wrong);
my $ids = RG::Load::upstream_ids($srv);
is(scalar(grep { $ids->{$_->[0]} } @ka), 0, 'no idle-closed request reached the upstream');

# After: only the new generation. Each pre-upgrade nonce the new workers have not seen yet is
# admitted now; in all, each one exactly once more.
for my $i (0 .. $#pre) {
    for my $round (1, 2) {
        my $r = RG::Load::once($port, RG::Load::with_id($pre[$i]{bytes}, "after-$i-$round"));
        $admitted{$i}++ if ($r->{status} // 0) == 200;
    }
}
is(scalar(grep { ($admitted{$_} // 0) == 1 } 0 .. $#pre), scalar @pre,
   'by design: every nonce admitted before the upgrade was admitted exactly once more after it');

my $m_after = RG::Metrics::snap($srv);
is(RG::Metrics::val($m_after, 'relay_guard_requests_total', key => 'bob', class => '2xx'), 10,
   "by design: the counters restarted: bob's count is the 10 replays the new store admitted, not 10 + 10");
is(RG::Metrics::val($m_after, 'relay_guard_auth_total', key => '-', outcome => 'REPLAY'),
   10 + ($overlap{'new: 200 OK'} // 0),
   '... and its REPLAY count holds only the new generation\'s refusals');

# The new zone works like the old one: admitted once, refused on either worker.
my $fresh = RG::Load::signed_request(id => 'fresh');
is(status_of(RG::Load::once($port, $fresh->{bytes})), '200 OK', 'after: a new nonce is admitted');
my %refused_by;
for (1 .. 40) {
    my $r = RG::Load::once($port, $fresh->{bytes});
    last unless status_of($r) eq '401 REPLAY';
    $refused_by{ $r->{headers}{'x-pid'} }++;
    last if keys %refused_by == 2;
}
is(join(' ', sort keys %refused_by), join(' ', @new_workers), '... and its replay refused by both new workers');
unlike($srv->error_log, qr/\[(emerg|alert|crit)\]/, 'no emerg/alert/crit in the error log');
$srv->stop;
diag(sprintf 'took %.1f s', time - $t0);
done_testing();
