# Fleet-wide concurrency slots and token budgets on a real Redis (issue 14), on loopback:
# Debian's redis-server on a private port and directory, no persistence, a password; relays
# (separate nginx instances) pointed at it as one fleet, lease=2s.
# - a key's concurrent_requests hold across relays, and Redis's slot set says who is in flight;
# - a slot goes back exactly once however the request ends (done, client gone mid-stream,
#   upstream error, internal redirect) and after a reload while it was held;
# - a request that outlives its lease keeps its slot (the worker renews it);
# - a relay killed with -9 holding slots gives them back when their leases end;
# - a token budget is spent fleet-wide, and Redis's counter holds each response's tokens once;
# - settlements Redis cannot take are counted, and never delay or fail a response.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Fleet ();
use RG::Redis ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
RG::Redis::binary_or_skip();

my $LEASE = 2;    # seconds: lease=2s
my $dir = File::Temp::tempdir('rg-fleet-limits-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my %secret = map { $_ => RG::Fleet::secret_of($_) } qw(cc tok long dead hup);
RG::Fleet::spew("$dir/keys.json", JSON::PP->new->canonical->encode({ keys => [
    { id => 'cc',   secrets => [$secret{cc}],   limits => { concurrent_requests => 2 } },
    { id => 'tok',  secrets => [$secret{tok}],  limits => { tokens => { budget => 100, per => '1h' } } },
    { id => 'long', secrets => [$secret{long}], limits => { concurrent_requests => 1 } },
    { id => 'dead', secrets => [$secret{dead}], limits => { concurrent_requests => 2 } },
    { id => 'hup',  secrets => [$secret{hup}],  limits => { concurrent_requests => 3, tokens => { budget => 1000000, per => '1d' } } },
] }));
my $redis = RG::Redis->start($dir);
my $rport = $redis->port;
sub cli { $redis->cli(@_) }

my $prefix = 't073:';
my $args = "prefix=$prefix password_file=$dir/pass timeout=200ms lease=${LEASE}s";
# An internal redirect after the access phase: the upstream's 404 goes to a named location.
my $redirect = <<'EOC';
        location /redirect/v1/ {
            relay_guard signature;
            proxy_intercept_errors on;
            error_page 404 = @after;
            proxy_pass http://127.0.0.1:MOCK/v1/;
        }
        location @after { return 200 "redirected\n"; }
EOC
$redirect =~ s/MOCK/$ENV{TEST_NGINX_MOCK_PORT}/g;
my %conf = (redis => "127.0.0.1:$rport", keys => "$dir/keys.json", redis_args => $args, server => $redirect);
my $a = RG::Server->new(name => 'flim-a', workers => 2);
my $b = RG::Server->new(name => 'flim-b', workers => 1);
$a->start(RG::Fleet::http_conf(%conf));
$b->start(RG::Fleet::http_conf(%conf, zone => 'rgb:1m'));

sub signed {
    my (%o) = @_;
    my $extra = delete $o{headers} // {};
    my $req = RG::Fleet::signed(%o);
    my $h = join '', map { "$_: $extra->{$_}\r\n" } sort keys %$extra;
    $req =~ s/\r\n\r\n/\r\n$h\r\n/;
    return $req;
}
sub at { my ($srv, $req, $t) = @_; RG::Fleet::send_raw($srv->port, $req, $t // 8) }
sub v { RG::Fleet::verdict(@_) }
sub zcard { cli('ZCARD', "${prefix}c:$_[0]") }
# Waits (bounded) until $cond holds; returns the seconds it took, or undef.
sub within {
    my ($secs, $cond) = @_;
    my $t0 = time;
    while (time - $t0 < $secs) { return time - $t0 if $cond->(); sleep 0.02 }
    return undef;
}
# Sends in the background; returns a pid to reap with done_bg (its verdict on a pipe).
my %bg;
sub bg {
    my ($srv, $req, $t) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) { close $r; my $ans = at($srv, $req, $t); print $w v($ans); close $w; POSIX::_exit(0) }
    close $w;
    $bg{$pid} = $r;
    return $pid;
}
sub done_bg { my ($pid) = @_; my $r = delete $bg{$pid}; local $/; my $v = <$r>; waitpid $pid, 0; $v // '' }

subtest 'concurrent_requests hold across relays; the slot set shows who is in flight' => sub {
    my @held = map { bg($a, signed(key => 'cc', headers => { 'x-mock-delay-ms' => 1200 })) } 1 .. 2;
    ok(defined within(3, sub { zcard('cc') eq '2' }), 'two requests at A: Redis\'s slot set holds 2');
    my $r = at($b, signed(key => 'cc'));
    is(v($r), '429 LIMIT_CONCURRENCY', 'a third at B: 429 LIMIT_CONCURRENCY');
    like($r->{headers}{'retry-after'} // '', qr/^[1-9]\d*$/, '... with retry-after');
    like($r->{body}, qr/"rate_limit_error".*concurrent_requests limit \(2 in flight\)/s, '... in Anthropic\'s shape');
    like($b->error_log, qr/refused key "cc": over its concurrent_requests limit .*\(fleet-wide\)/, 'B logs the refusal as fleet-wide');
    is(done_bg($_), '200 OK', 'a held request completes: 200') for @held;
    my $t = within(2, sub { zcard('cc') eq '0' });
    ok(defined $t, sprintf('after they finished, the set is empty (%.0f ms after)', 1000 * ($t // 0)));
    is(v(at($b, signed(key => 'cc'))), '200 OK', 'and B admits again');
};

subtest 'a token budget is spent fleet-wide; Redis holds each response\'s tokens once' => sub {
    my $usage = '{"input_tokens":25,"output_tokens":15}';    # 40 counted tokens
    my @got;
    for my $i (1 .. 5) {
        push @got, v(at($i % 2 ? $a : $b, signed(key => 'tok', headers => { 'x-mock-usage' => $usage })));
        within(2, sub { cli('GET', "${prefix}t:tok:3600:" . int(time / 3600)) eq 40 * grep({ /^200/ } @got) });
    }
    is_deeply(\@got, ['200 OK', '200 OK', '200 OK', '429 LIMIT_TOKENS', '429 LIMIT_TOKENS'],
              'under the budget of 100: 0, 40 and 80 used before each admitted one; then refused at both relays');
    my $now = cli('TIME');
    my ($secs) = $now =~ /^(\d+)/;
    is(cli('GET', "${prefix}t:tok:3600:" . int($secs / 3600)), 120, "Redis's window counter: exactly 3 x 40 = 120");
    my $ttl = cli('TTL', "${prefix}t:tok:3600:" . int($secs / 3600));
    cmp_ok($ttl, '>', 0, "the counter expires (ttl $ttl s)");
    cmp_ok($ttl, '<=', 3600 + 60, '... after its window');
    my $r = at($a, signed(key => 'tok'));
    like($r->{body}, qr/tokens budget \(100 per 1h\)/, 'the refusal names the budget');
    my $ra = $r->{headers}{'retry-after'} // 0;
    my $left = 3600 - $secs % 3600;
    cmp_ok(abs($ra - $left), '<=', 2, "retry-after ($ra s) is the time to the window's end on Redis's clock ($left s)");
};

subtest 'a slot goes back exactly once however the request ends' => sub {
    my $stream = '{"model":"claude-sonnet-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}';
    # A client that leaves mid-stream.
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a->port, Timeout => 5) or die $!;
    $s->syswrite(signed(key => 'cc', body => $stream, headers => { 'x-mock-sse-gap-ms' => 300, 'x-mock-sse-events' => 20 }));
    my $sel = IO::Select->new($s);
    my $first = '';
    $s->sysread($first, 4096) if $sel->can_read(5);
    like($first, qr{^HTTP/1\.1 200}, 'a stream starts');
    is(zcard('cc'), 1, 'its slot is in the set');
    close $s;
    my $t = within(5, sub { zcard('cc') eq '0' });
    ok(defined $t, sprintf('the client left mid-stream: the slot is back (%.0f ms)', 1000 * ($t // 0)));
    # An upstream error, a refused connection to the upstream, an internal redirect.
    is(v(at($a, signed(key => 'cc', headers => { 'x-mock-status' => 500 }))), '500 OK', 'an upstream 500 passes through');
    like(v(at($a, signed(key => 'cc', headers => { 'x-mock-sse-cut' => 1 }, body => $stream))), qr/^200/,
         'a stream the upstream cuts mid-way');
    my $r = at($a, signed(key => 'cc', target => '/redirect/v1/nowhere'));
    is($r->{status}, 200, 'an internal redirect (the upstream\'s 404 to a named location)');
    like($r->{body}, qr/redirected/, '... answered by it');
    ok(defined within(2, sub { zcard('cc') eq '0' }), 'after all of them: the set is empty');
    # Each of the slots went back once: both are free again, at both relays.
    my @held = map { bg($_, signed(key => 'cc', headers => { 'x-mock-delay-ms' => 600 })) } $a, $b;
    ok(defined within(3, sub { zcard('cc') eq '2' }), 'two slots can be taken again (one per relay)');
    is(v(at($a, signed(key => 'cc'))), '429 LIMIT_CONCURRENCY', 'and a third is refused: none was released twice');
    done_bg($_) for @held;
    ok(defined within(2, sub { zcard('cc') eq '0' }), 'empty again');
};

subtest 'a request that outlives its lease keeps its slot' => sub {
    my $hold = int(($LEASE + 1.5) * 1000);
    my $pid = bg($a, signed(key => 'long', headers => { 'x-mock-delay-ms' => $hold }));
    ok(defined within(2, sub { zcard('long') eq '1' }), "a ${hold} ms request holds the key's one slot");
    sleep $LEASE + 0.7;
    is(zcard('long'), 1, "past its ${LEASE} s lease it is still in the set (renewed)");
    my ($score) = cli('ZRANGE', "${prefix}c:long", 0, 0, 'WITHSCORES') =~ /\n(\d+)/;
    my ($rs, $rus) = cli('TIME') =~ /(\d+)\s+(\d+)/;
    my $ahead = ($score // 0) - ($rs * 1000 + int($rus / 1000));
    cmp_ok($ahead, '>', 0, "its lease ends in the future ($ahead ms)");
    is(v(at($b, signed(key => 'long'))), '429 LIMIT_CONCURRENCY', 'another request of the key is refused at B meanwhile');
    is(done_bg($pid), '200 OK', 'the long request completes');
    ok(defined within(2, sub { zcard('long') eq '0' }), 'and its slot is back');
};

subtest 'a relay killed with -9 holding slots: they come back when their leases end' => sub {
    my $c = RG::Server->new(name => 'flim-c', workers => 1);
    $c->start(RG::Fleet::http_conf(%conf, zone => 'rgc:1m'));
    my @held = map { bg($c, signed(key => 'dead', headers => { 'x-mock-delay-ms' => 5000 }), 10) } 1 .. 2;
    ok(defined within(3, sub { zcard('dead') eq '2' }), 'two requests at C hold both slots of key "dead"');
    my @pids = ($c->master_pid, $c->worker_pids);
    kill 'KILL', @pids;
    my $t0 = time;
    ok(defined within(3, sub { !grep { RG::Server::alive($_) } @pids }), "C's master and worker killed (-9)");
    is(v(at($a, signed(key => 'dead'))), '429 LIMIT_CONCURRENCY', 'A refuses while the dead host\'s leases run');
    my $t = within($LEASE + 2, sub { at($a, signed(key => 'dead'))->{status} == 200 });
    ok(defined $t, sprintf('A admits again %.1f s after the kill (lease %d s)', time - $t0, $LEASE));
    cmp_ok(time - $t0, '<=', $LEASE + 1.5, '... within the lease (+1.5 s of slack)');
    done_bg($_) for @held;
};

subtest 'a reload while requests hold slots: no crash, each released once, no charge twice' => sub {
    my $before = cli('GET', "${prefix}t:hup:86400:" . int(time / 86400));
    $before = 0 unless $before =~ /^\d+$/;
    my $usage = '{"input_tokens":7,"output_tokens":3}';
    my @held = map { bg($a, signed(key => 'hup', headers => { 'x-mock-delay-ms' => 2500, 'x-mock-usage' => $usage })) } 1 .. 3;
    ok(defined within(3, sub { zcard('hup') eq '3' }), 'three requests hold the key\'s three slots');
    my %old = map { $_ => 1 } $a->worker_pids;
    kill 'HUP', $a->master_pid;
    ok(defined within(3, sub { grep({ !$old{$_} } $a->worker_pids) == 2 }), 'HUP: new workers started');
    # The old workers run until their requests end (RG::Server::reload would wait for that).
    is(v(at($b, signed(key => 'hup', headers => { 'x-mock-usage' => '{"input_tokens":0,"output_tokens":0}' }))),
       '429 LIMIT_CONCURRENCY', 'while the old workers finish them, the slots are still held');
    is(done_bg($_), '200 OK', 'an in-flight request finishes in an old worker: 200') for @held;
    ok(defined within(5, sub { !grep { $old{$_} } $a->worker_pids }), 'the old workers exited');
    ok(defined within(3, sub { zcard('hup') eq '0' }), 'every slot came back');
    my $after;
    within(3, sub { ($after = cli('GET', "${prefix}t:hup:86400:" . int(time / 86400))) eq $before + 30 });
    is($after, $before + 30, 'the three responses were charged once each (+30 tokens)');
    unlike($a->error_log, qr/\[alert\]|\[emerg\]|exited on signal|panicked/, 'no alert, no crash in the log');
    is(v(at($a, signed(key => 'hup'))), '200 OK', 'the new workers admit');
};

subtest 'Redis gone after admission: the response is untouched, the lost settlement counted' => sub {
    my $m0 = RG::Metrics::snap($b);
    my $pid = bg($b, signed(key => 'cc', target => '/local/v1/messages', headers => { 'x-mock-delay-ms' => 500 }));
    ok(defined within(2, sub { zcard('cc') eq '1' }), 'a request holds a slot');
    $redis->stop('KILL');
    my $t0 = time;
    is(done_bg($pid), '200 OK', 'it completes: 200');
    cmp_ok(time - $t0, '<', 2, 'without waiting for Redis');
    my $lost;
    within(3, sub {
        my $m = RG::Metrics::snap($b);
        $lost = 0;
        $lost += $m->{$_} - ($m0->{$_} // 0) for grep { /^relay_guard_redis_errors_total\{/ } keys %$m;
        $lost >= 1;
    });
    cmp_ok($lost, '>=', 1, "relay_guard_redis_errors_total counts the settlement it could not deliver (+$lost)");
    unlike($b->error_log, qr/\[alert\]|exited on signal|panicked/, 'no alert, no crash');
    $redis->restart;
    my $t = within(3, sub { at($b, signed(key => 'cc'))->{status} == 200 });
    ok(defined $t, 'Redis back (empty): B admits again');
};

$a->stop;
$b->stop;
RG::Fleet::stop_all();
done_testing();
