# The fleet state on a real Redis (issue 14), on loopback: Debian's redis-server on a private
# port and directory, no persistence, a password; two relays (two nginx instances) pointed at
# it as one fleet. A signed request admitted at one is a replay at the other; token requests
# make no nonce; a key's requests-per-minute limit holds across both; AUTH from password_file
# (a wrong password is the failure policy, not an admit); every key in Redis has the prefix and
# a nonce key is a hash, never the nonce; Redis killed and started again.
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
use RG::Fleet ();
use RG::Redis ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
RG::Redis::binary_or_skip();

my $dir = File::Temp::tempdir('rg-redis-basic-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my @shard_keys = map { "shard$_" } 1 .. 8;
RG::Fleet::write_keys("$dir/keys.json", extra => \@shard_keys);
RG::Fleet::spew("$dir/wrong-pass", "not-the-password\n");
chmod 0600, "$dir/wrong-pass";
my $redis = RG::Redis->start($dir);
my ($rport, $password) = ($redis->port, $redis->password);
sub cli { $redis->cli(@_) }

my $prefix = 't072:';
my $args = "prefix=$prefix password_file=$dir/pass timeout=200ms";
my $a = RG::Server->new(name => 'redis-a', workers => 2);
my $b = RG::Server->new(name => 'redis-b', workers => 1);
$a->start(RG::Fleet::http_conf(redis => "127.0.0.1:$rport", keys => "$dir/keys.json", redis_args => $args));
$b->start(RG::Fleet::http_conf(redis => "127.0.0.1:$rport", keys => "$dir/keys.json", redis_args => $args, zone => 'rgb:1m'));
sub at { my ($srv, $req, $t) = @_; RG::Fleet::send_raw($srv->port, $req, $t // 5) }
sub v { RG::Fleet::verdict(@_) }
my @nonces;
sub signed { my %o = @_; my $n = RG::nonce(); push @nonces, $n; RG::Fleet::signed(%o, sign => { nonce => $n }) }

subtest 'requirepass is in force: without the password Redis refuses' => sub {
    like(`redis-cli -h 127.0.0.1 -p $rport ping 2>&1`, qr/NOAUTH/, 'redis-cli without -a: NOAUTH');
    is(cli('ping'), 'PONG', 'with it: PONG');
};

subtest 'a nonce is fleet-wide: admitted at A, a replay at B and at A' => sub {
    for my $i (1 .. 5) {
        my $req = signed();
        my ($first, $other) = $i % 2 ? ($a, $b) : ($b, $a);
        is(v(at($first, $req)), '200 OK', "request $i: 200 OK at its first host");
        is(v(at($other, $req)), '401 REPLAY', "request $i: 401 REPLAY at the other host");
        is(v(at($first, $req)), '401 REPLAY', "request $i: 401 REPLAY at its own host again");
    }
};

subtest 'admissions pipelined on one link each get their own verdict' => sub {
    # B has one worker, so its admissions share one connection to Redis and go out together;
    # a reply read as another request's would show as a fresh request refused or a replay
    # admitted.
    my @old = map { signed() } 1 .. 12;
    is(v(at($a, $_)), '200 OK', 'admitted at A first') for @old;
    my @batch = map { $_ % 2 ? $old[$_ >> 1] : signed() } 0 .. 23;   # fresh, replay, fresh, ...
    my %pipe;
    for my $i (0 .. $#batch) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) { close $r; print $w v(at($b, $batch[$i], 8)); close $w; POSIX::_exit(0) }
        close $w;
        $pipe{$i} = [$pid, $r];
    }
    my (@wrong, %seen);
    for my $i (0 .. $#batch) {
        my ($pid, $r) = @{ $pipe{$i} };
        local $/;
        my $got = <$r> // '';
        waitpid $pid, 0;
        my $want = $i % 2 ? '401 REPLAY' : '200 OK';
        $seen{$got}++;
        push @wrong, "request $i: $got, not $want" if $got ne $want;
    }
    is_deeply(\@wrong, [], '24 at once at B: the 12 fresh admitted, the 12 replays refused ('
              . join(', ', map { "$_ x$seen{$_}" } sort keys %seen) . ')');
};

subtest 'relay_guard_redis_seconds counts each host\'s own round trips' => sub {
    my ($ba, $bb) = (RG::Metrics::snap($a), RG::Metrics::snap($b));
    is(v(at($a, signed())), '200 OK', "fresh request $_ at A: 200 OK") for 1 .. 3;
    my ($aa, $ab) = (RG::Metrics::snap($a), RG::Metrics::snap($b));
    is(RG::Metrics::delta($ba, $aa, 'relay_guard_redis_seconds_count'), 3, 'A: relay_guard_redis_seconds_count += 3');
    is(RG::Metrics::delta($bb, $ab, 'relay_guard_redis_seconds_count'), 0, 'B: unchanged (it made none)');
    cmp_ok(RG::Metrics::delta($ba, $aa, 'relay_guard_redis_seconds_sum'), '>', 0, 'A: its _sum grew');
};

subtest 'token requests are unaffected by nonces' => sub {
    my $before = cli('dbsize');
    my $sa = RG::Metrics::snap($a);
    is(at($_, RG::Fleet::token_request())->{status}, 200, 'a token request: 200') for $a, $b, $a;
    is(cli('dbsize'), $before, "no key added to Redis ($before before and after)");
    is(RG::Metrics::delta($sa, RG::Metrics::snap($a), 'relay_guard_redis_seconds_count'), 0,
       'A made no Redis round trip for them');
};

subtest 'requests_per_minute holds across the two relays (6 a minute, burst 3)' => sub {
    my (@ok, @no, @other);
    my $t0 = time;
    for my $i (1 .. 9) {
        my $r = at($i % 2 ? $a : $b, signed(key => 'rl'));
        if ($r->{status} == 200) { push @ok, $i }
        elsif ($r->{status} == 429) { push @no, $r }
        else { push @other, v($r) }
    }
    my $t = time - $t0;
    my $max = 3 + POSIX::floor($t * 6 / 60);
    is_deeply(\@other, [], 'every answer 200 or 429');
    cmp_ok(scalar @ok, '<=', $max, sprintf('admitted %d of 9 over both relays in %.1f s: at most burst + floor(t*rpm/60) = %d', scalar @ok, $t, $max));
    cmp_ok(scalar @ok, '>=', 3, 'the burst of 3 admitted');
    ok(!grep({ ($_->{headers}{'retry-after'} // '') !~ /^[1-9]\d*$/ } @no), 'every 429 has retry-after');
    ok(!grep({ ($_->{headers}{'x-rg-status'} // '') ne 'LIMIT_RPM' } @no), 'every 429 is LIMIT_RPM');
};

subtest 'keys in Redis: the prefix, hashed nonces, bounded lifetimes' => sub {
    my @keys = $redis->scan;
    cmp_ok(scalar @keys, '>=', 5, scalar(@keys) . ' keys in Redis');
    is_deeply([grep { index($_, $prefix) != 0 } @keys], [], "every key starts with $prefix");
    my @n = grep { index($_, "${prefix}n:") == 0 } @keys;
    cmp_ok(scalar @n, '>=', 5, scalar(@n) . " nonce keys (${prefix}n:...)");
    is_deeply([grep { !/^\Q$prefix\En:[0-9a-f]{16,}$/ } @n], [], 'each nonce key is prefix n: and a hex digest');
    my @clear = grep { my $k = $_; grep { index($k, $_) >= 0 } @nonces } @keys;
    is_deeply(\@clear, [], 'no key holds a nonce in the clear (' . scalar(@nonces) . ' nonces sent)');
    ok((grep { $_ eq "${prefix}r:rl" } @keys) || (grep { /^\Q$prefix\E.*rl/ } @keys), 'the rate state of key rl is there');
    my $pttl = cli('pttl', $n[0]);
    cmp_ok($pttl, '>', 0, "a nonce key expires (pttl $pttl ms)");
    cmp_ok($pttl, '<=', 65_000, '... within 2 x clock skew + 5 s');
};

subtest 'AUTH: a wrong password is the failure policy, never an admit' => sub {
    my $c = RG::Server->new(name => 'redis-c', workers => 1);
    $c->start(RG::Fleet::http_conf(redis => "127.0.0.1:$rport", keys => "$dir/keys.json", zone => 'rgc:1m',
                                   redis_args => "prefix=$prefix password_file=$dir/wrong-pass timeout=200ms"));
    my $r = at($c, signed());
    my ($ok, $why) = RG::Fleet::is_unavailable($r);
    ok($ok, "closed: 503 STORE_UNAVAILABLE" . ($ok ? '' : " (got $why)"));
    my $before = RG::Metrics::snap($c);
    is(at($c, signed(target => '/local/v1/messages'))->{status}, 200, 'local: relayed');
    my $after = RG::Metrics::snap($c);
    my $d = 0;
    for my $id (keys %$after) { $d += $after->{$id} - ($before->{$id} // 0) if $id =~ /^relay_guard_redis_errors_total\{.*kind="error_reply"/ }
    cmp_ok($d, '>=', 1, 'counted as relay_guard_redis_errors_total{kind="error_reply"}');
    unlike($c->error_log, qr/\Q$password\E|not-the-password/, 'neither password in the error log');
    $c->stop;
};

subtest 'Redis killed: closed 503 at once, local relays; started again: admitted within a timeout' => sub {
    $redis->stop('KILL');
    my $r = at($a, signed(), 5);
    my ($ok, $why) = RG::Fleet::is_unavailable($r);
    ok($ok, sprintf('closed: 503 STORE_UNAVAILABLE in %.0f ms', 1000 * $r->{seconds}) . ($ok ? '' : " (got $why)"));
    cmp_ok($r->{seconds}, '<=', 1.2, 'within the timeout (+1 s of slack)');
    is(at($b, signed(target => '/local/v1/messages'))->{status}, 200, 'local: relayed');
    $redis->restart;
    my $t0 = time;
    my $back;
    while (time - $t0 < 5) {
        if (at($a, signed(), 2)->{status} == 200) { $back = time - $t0; last }
        sleep 0.01;
    }
    ok(defined $back, sprintf('A admits again %.0f ms after Redis is ready', 1000 * ($back // -1)));
    cmp_ok($back // 99, '<=', 0.2 + 0.1, '... within one timeout (200 ms) + 100 ms');
    my $req = signed();
    is(v(at($b, $req)), '200 OK', 'B admits a fresh request');
    is(v(at($a, $req)), '401 REPLAY', 'and A refuses its replay: fleet-wide again');
};

subtest 'hash $relay_guard_key_id consistent shards keys over two Redis servers; a failed one keeps its keys' => sub {
    my $s2 = RG::Redis->start($dir, name => 'redis-s2', password => $password);
    my $rport2 = $s2->port;
    # nginx's default max_fails=1: the module counts no failure, so a key never moves.
    my $up = "hash \$relay_guard_key_id consistent; server 127.0.0.1:$rport; server 127.0.0.1:$rport2;";
    my %o = (keys => "$dir/keys.json", upstream => $up, redis_args => "prefix=s: password_file=$dir/pass timeout=200ms");
    my $c = RG::Server->new(name => 'redis-shard-c', workers => 2);
    my $d = RG::Server->new(name => 'redis-shard-d', workers => 1);
    $c->start(RG::Fleet::http_conf(%o, zone => 'rgsc:1m'));
    $d->start(RG::Fleet::http_conf(%o, zone => 'rgsd:1m'));
    my $n1 = sub { scalar grep { /^s:n:/ } $redis->scan };
    my $n2 = sub { scalar grep { /^s:n:/ } $s2->scan };
    my (%on, %on_key);
    for my $k (@shard_keys) {
        my ($b1, $b2) = ($n1->(), $n2->());
        my @reqs = map { signed(key => $k) } 1 .. 2;
        is(v(at($c, $_)), '200 OK', "$k at C: 200 OK") for @reqs;
        is(v(at($d, $_)), '401 REPLAY', "$k replayed at D: 401 REPLAY") for @reqs;
        my ($g1, $g2) = ($n1->() - $b1, $n2->() - $b2);
        ok(($g1 == 2 && $g2 == 0) || ($g1 == 0 && $g2 == 2), "$k: both nonces on one server (+$g1, +$g2)");
        $on{$g1 ? 'first' : 'second'}++;
        $on_key{$k} = $g1 ? 'first' : 'second';
    }
    is(scalar keys %on, 2, 'the 8 key ids use both servers (' . join(', ', map { "$_ $on{$_}" } sort keys %on) . ')');
    my ($k1) = grep { $on_key{$_} eq 'first' } keys %on_key;
    my ($k2) = grep { $on_key{$_} eq 'second' } keys %on_key;
    $s2->stop;
    for my $i (1 .. 4) {
        my ($ok, $why) = RG::Fleet::is_unavailable(at($c, signed(key => $k2)));
        ok($ok, "$k2 (second server, stopped), request $i: 503 STORE_UNAVAILABLE" . ($ok ? '' : " (got $why)"));
    }
    is(v(at($c, signed(key => $k1))), '200 OK', "$k1 (first server): 200 OK meanwhile");
    $s2->restart;
    my $b1 = $n1->();
    my $r = signed(key => $k2);
    is(v(at($c, $r)), '200 OK', "$k2 once the second server is back: 200 OK");
    is(scalar(grep { /^s:n:/ } $s2->scan), 1, "its nonce is on the second server (the key did not move)");
    is($n1->() - $b1, 0, 'and not on the first');
    is(v(at($d, $r)), '401 REPLAY', 'its replay at D: 401 REPLAY');
    $_->stop for $c, $d;
    $s2->stop;
};

$_->stop for $a, $b;
done_testing;
