# Workers killed with SIGKILL: while a signed request's body is being read, while (as far as
# nginx can tell) holding the zone's lock, and repeatedly under a flood of signed requests sent
# three times each. The master respawns each worker; the zone stays usable; no nonce is
# admitted twice.
#
# The zone's lock is the slab pool's ngx_shmtx (zone.rs takes nothing else): its word, the
# first field of the ngx_slab_pool_t at the start of the zone, holds the holder's pid. When a
# worker dies, the master's SIGCHLD handler (ngx_process_get_status -> ngx_unlock_mutexes in
# src/os/unix/ngx_process.c) clears that word if it holds the dead pid (ngx_shmtx_force_unlock,
# which also wakes waiters) and logs `shared memory zone "rg" was locked by PID`. The module's
# critical section is two bucket scans (~200 ns), too short to hit with kill -9 on purpose, so
# the second subtest writes the victim's pid into the lock word itself (through
# /proc/PID/mem, as root) and then kills the victim: to nginx that is a worker dying inside
# the critical section. Uses RG::Server and RG::Load.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use List::Util qw(shuffle);
use Time::HiRes qw(time sleep);
use RG;
use RG::Server;
use RG::Load;

my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';

my $ZONE_BYTES = 1048576;    # 1m: no other zone of this size (the accept mutex's is a page)
my $up = RG::Server::free_port();
# Under valgrind the kills below are spread over more than the default ±30 s window (see the
# flood subtest), which would refuse its late resends as STALE before the nonce is looked up.
my $http = RG::Load::relay_conf(upstream => $up, data => $data,
                                server => '        client_body_timeout 10s;'
                                    . ($ENV{TEST_NGINX_USE_VALGRIND} ? "\n        relay_guard_clock_skew 300s;" : ''));

my $t0 = time;
my $srv = RG::Server->new(name => 'kill', workers => 2);
$srv->start($http);
my $port = $srv->port;

sub status_of { RG::Load::status_of(@_) }
sub wait_until { my ($secs, $cond) = @_; my $end = time + $secs; until ($cond->()) { return 0 if time > $end; sleep 0.02 } 1 }

# Two workers again, none of them $gone.
sub respawned {
    my ($gone) = @_;
    return wait_until(5, sub { my @w = $srv->worker_pids; @w == 2 && !grep { $_ == $gone } @w });
}

# A keep-alive connection and the pid of the worker that serves it.
sub conn_to_worker {
    my $c = RG::Load::connect_to($port) or die "connect: $!";
    my $r = RG::Load::exchange($c, RG::Load::token_request(id => 'probe')->{bytes});
    die 'probe failed: ' . ($r->{err} // $r->{status}) unless ($r->{status} // 0) == 200;
    return ($c, $r->{headers}{'x-pid'});
}

# The zone is refused as a replay by both workers: it is usable and shared.
sub refused_by_both {
    my ($req) = @_;
    my %by;
    for (1 .. 60) {
        my $r = RG::Load::once($port, $req->{bytes});
        return 0 unless status_of($r) eq '401 REPLAY';
        $by{ $r->{headers}{'x-pid'} } = 1;
        return 1 if keys %by == 2;
    }
    return 0;
}

subtest 'SIGKILL while a signed body is being read: respawn; the nonce was not burned' => sub {
    my $body = RG::json_body(4096);
    my $req = RG::Load::signed_request(body => $body, id => 'slow');
    my ($c, $victim) = conn_to_worker();
    # Everything but the last 2 KiB of the body: the worker is waiting for the rest.
    my $part = substr($req->{bytes}, 0, length($req->{bytes}) - 2048);
    RG::Load::exchange($c, $part, write_only => 1);
    sleep 0.3;
    ok(kill('KILL', $victim), "killed worker $victim mid-body");
    my $r = RG::Load::read_response($c, time + 5);
    close $c;
    is($r->{got}, 0, 'the client got no byte of a response') or diag(explain $r);
    like($r->{err} // '', qr/^(eof|reset)$/, '... and the connection closed');
    ok(respawned($victim), 'the master started a new worker');
    like($srv->error_log, qr/worker process $victim exited on signal 9/, '... having seen it exit on signal 9');
    # The MAC is checked only after the whole body, the nonce stored only after the MAC: the
    # client may resend the same signed request.
    is(status_of(RG::Load::once($port, $req->{bytes})), '200 OK',
       'the same signed request, resent, is admitted');
    ok(refused_by_both($req), '... then refused as REPLAY by both workers');
};

# The address of the zone in the workers (the master mapped it before forking them).
sub zone_address {
    my ($pid) = @_;
    no warnings 'portable';    # hex() of 64-bit addresses
    open my $f, '<', "/proc/$pid/maps" or return undef;
    my @found;
    while (<$f>) {
        my ($lo, $hi, $perm) = /^([0-9a-f]+)-([0-9a-f]+) (\S+)/ or next;
        push @found, hex $lo if $perm =~ /^rw.s/ && hex($hi) - hex($lo) == $ZONE_BYTES;
    }
    return @found == 1 ? $found[0] : undef;
}

sub lock_word {
    my ($pid, $addr, $set) = @_;
    open my $mem, '+<:raw', "/proc/$pid/mem" or die "/proc/$pid/mem: $!";
    sysseek($mem, $addr, 0) or die "seek: $!";
    if (defined $set) {
        syswrite($mem, pack('Q<', $set)) == 8 or die "write /proc/$pid/mem: $!";
        return $set;
    }
    sysread($mem, my $w, 8) == 8 or die "read /proc/$pid/mem: $!";
    return unpack 'Q<', $w;
}

subtest 'SIGKILL of the worker holding the zone lock: the master frees it, no hang' => sub {
    plan skip_all => 'writing a worker\'s memory needs root' if $>;
    my ($c, $waiter) = conn_to_worker();
    my ($victim) = grep { $_ != $waiter } $srv->worker_pids;
    my $addr = zone_address($waiter);
    ok(defined $addr, sprintf 'found the zone in worker %d at 0x%x', $waiter, $addr // 0)
        or return;
    is(lock_word($waiter, $addr), 0, 'its lock word is 0 (free)');
    lock_word($waiter, $addr, $victim);
    is(lock_word($victim, $addr), $victim, "set to $victim, seen by that worker too (one zone)");

    my $req = RG::Load::signed_request(id => 'locked');
    RG::Load::exchange($c, $req->{bytes}, write_only => 1);
    my $r = RG::Load::read_response($c, time + 1);
    is($r->{err}, 'timeout', "a signed request on worker $waiter waits for the lock (no answer in 1 s)");
    ok(kill('KILL', $victim), "killed the holder, worker $victim");
    my $t = time;
    $r = RG::Load::read_response($c, time + 5);
    close $c;
    is(status_of($r), '200 OK', sprintf('the waiting request was admitted %.2f s after the kill', time - $t));
    # The master frees the lock, then logs it: the waiting request can be answered first.
    for (1 .. 50) {
        last if $srv->error_log =~ /shared memory zone "rg" was locked by $victim/;
        select(undef, undef, undef, 0.1);
    }
    like($srv->error_log, qr/shared memory zone "rg" was locked by $victim/,
         'nginx logged that it freed the lock of the dead worker');
    is(lock_word($waiter, $addr), 0, 'the lock word is 0 again');
    ok(respawned($victim), 'the master started a new worker');
    ok(refused_by_both($req), 'the zone works: that nonce is refused as REPLAY by both workers');
    my $fresh = RG::Load::signed_request(id => 'after-lock');
    is(status_of(RG::Load::once($port, $fresh->{bytes})), '200 OK', 'and a new one is admitted');
};

# Under valgrind (TEST_NGINX_USE_VALGRIND) nginx answers some 20-50 times slower, and under
# AddressSanitizer (scripts/test --asan sets ASAN_OPTIONS) a few times slower: in the ~3 s of
# ten kills the clients send a few hundred (ASan on a busy machine: ~2,500) requests, not each
# of 1000 nonces twice. There the list is 100 nonces and the kills are 1 s apart, so the flood
# still sends every nonce several times while workers die; and a kill can cut off the upstream
# leg (the upstream is a server of this nginx) of an admitted request, a 502 that the wide
# window of a slow nginx makes likely, so a 502 counts as a request a kill cut off.
my $VG = $ENV{TEST_NGINX_USE_VALGRIND} || $ENV{ASAN_OPTIONS};
subtest 'kill -9 ten times while three clients send the same signed requests over and over' => sub {
    my $dir = File::Temp::tempdir('rg-kill-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    # Each client sends the list over and over in its own order: every nonce goes to both
    # workers many times, while they are being killed.
    my @reqs = map { RG::Load::signed_request(id => "f$_")->{bytes} } 1 .. ($VG ? 100 : 1000);
    my $load = RG::Load::spawn(dir => $dir, seconds => 30, clients => [
        map { { kind => 'list', port => $port, tag => "k$_", pause => 0, cycle => 1,
                requests => [shuffle @reqs] } } 1 .. 3 ]);
    my ($kills, $respawns, $last_kill) = (0, 0, 0);
    sleep 0.3;
    for (1 .. 10) {
        my @w = $srv->worker_pids;
        my $victim = $w[rand @w];
        $kills++ if kill 'KILL', $victim;
        $last_kill = time;
        $respawns++ if respawned($victim);
        sleep($VG ? 1 : 0.1 + rand 0.1);
    }
    my $rows = $load->stop;
    my @late = grep { $_->[1] eq 'signed' && $_->[9] > $last_kill + 0.1 } @$rows;
    my @sent = grep { $_->[1] eq 'signed' } @$rows;
    my (%admitted, %outcomes, %sends);
    # A row: [id, kind, outcome, status, rg status, ..., nonce, time]; ok = a whole response.
    my $cut = sub { $_[0][2] ne 'ok' || ($VG && ($_[0][3] || 0) == 502) };
    for (@sent) {
        $outcomes{ $cut->($_) ? 'broken' : "$_->[3] $_->[4]" }++;
        $admitted{ $_->[8] }++ if $_->[2] eq 'ok' && ($_->[3] || 0) == 200;
        $sends{ $_->[8] }++;
    }
    my @nonces = map { /^X-Nonce: (\S+)\r$/m } @reqs;
    my $fewest = (sort { $a <=> $b } map { $sends{$_} // 0 } @nonces)[0];
    diag(sprintf '%d sends of %d nonces: %s; %d "was locked by" alerts', scalar @sent,
         scalar(@reqs), join(', ', map { "$_ x$outcomes{$_}" } sort keys %outcomes),
         scalar(() = $srv->error_log =~ /was locked by/g) - 1);
    is($kills, 10, '10 workers killed');
    is($respawns, 10, '... each respawned');
    cmp_ok($fewest, '>=', 2, "the flood sent each nonce at least twice (at least $fewest times)");
    cmp_ok(scalar @late, '>', 0, '... and was still running after the last kill');
    is(scalar(grep { $_->[0] eq 'end' } @$rows), 3, 'every client finished: no hang');
    is(scalar(grep { $admitted{$_} > 1 } keys %admitted), 0, 'no nonce admitted twice');
    # A nonce never admitted must have had a send cut off by a kill (the worker died after
    # recording it, before answering).
    my %broken_nonce = map { $_->[8] => 1 } grep { $cut->($_) } @sent;
    my @never = grep { !$admitted{$_} && !$broken_nonce{$_} } @nonces;
    is(scalar @never, 0, 'every nonce was admitted once, but for some of those a kill cut off');
    is(($outcomes{'broken'} // 0) + ($outcomes{'200 OK'} // 0) + ($outcomes{'401 REPLAY'} // 0),
       scalar @sent, 'every answer was 200 OK or 401 REPLAY');
    cmp_ok($outcomes{'broken'} // 0, '<=', 3 * $kills, 'at most one broken request per client and kill');
    my $fresh = RG::Load::signed_request(id => 'after-flood');
    is(status_of(RG::Load::once($port, $fresh->{bytes})), '200 OK', 'after: a new nonce is admitted');
    ok(refused_by_both($fresh), '... and refused as REPLAY by both workers');
};

unlike($srv->error_log, qr/\[(emerg|crit)\]/, 'no emerg/crit in the error log');
$srv->stop;
diag(sprintf 'took %.1f s', time - $t0);
done_testing();
