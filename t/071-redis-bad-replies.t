# Redis replies are input too (issue 14, "Bad input"): a scripted fake Redis
# (scripts/mock_redis.py) answers the relay's one script wrongly in every way the issue names
# (truncated, an error reply, an unexpected type, a malformed array, deep nesting, a 1 MiB
# bulk string, a reset mid-reply, a closed connection, a refused password, accept-and-never-
# answer, an answer after the timeout). Each must get the failure policy: `closed` answers 503
# overloaded_error with retry-after (STORE_UNAVAILABLE) within the timeout, `local` relays on
# the host's own state and counts relay_guard_redis_fallbacks_total; never a crash, a hang (the
# client's wait is bounded) or a wrong admit (a late answer is never read as another request's).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Fleet ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
# 300 ms, not the default's tens: the fake Redis is Python, and on a loaded CI machine its
# correct answers must not time out; the bounds below scale with it.
my $timeout = 0.3;      # relay_guard_redis timeout=300ms
my $bound = $timeout + 1.0;   # an answer later than this is a hang, on any machine

my $dir = File::Temp::tempdir('rg-redis-bad-XXXXXX', TMPDIR => 1, CLEANUP => 1);
RG::Fleet::write_keys("$dir/keys.json");
RG::Fleet::spew("$dir/pass", "mock-redis-password\n");
chmod 0600, "$dir/pass";
my $rport = RG::Server::free_port();
RG::Fleet::spawn("$dir/mock_redis.log", qr/listening/, 'python3', "$RG::Fleet::ROOT/scripts/mock_redis.py",
    '--listen', "127.0.0.1:$rport", '--mode-file', "$dir/mode", '--stats-file', "$dir/stats",
    '--requirepass', 'mock-redis-password', '--slow-ms', 900);
sub mode { RG::Fleet::spew("$dir/mode", $_[0]) }
sub stats { JSON::PP->new->decode(RG::Fleet::slurp("$dir/stats") // '{}') }
sub evals { my $s = stats(); my $n = 0; $n += $_ for values %{ $s->{evals} || {} }; $n }

my $srv = RG::Server->new(name => 'redis-bad', workers => 2);
$srv->start(RG::Fleet::http_conf(redis => "127.0.0.1:$rport", keys => "$dir/keys.json",
                                 redis_args => "password_file=$dir/pass timeout=300ms",
                                 server => <<"EOS"));
        # An internal redirect after the access phase (error_page on the upstream's 404) runs
        # the access phase again in \@again: the Redis check must not run a second time.
        location /redir/v1/ {
            relay_guard signature;
            proxy_intercept_errors on;
            error_page 404 = \@again;
            proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT}/v1/;
        }
        location \@again { relay_guard signature; proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT}; }
EOS
# The port answers as soon as one worker listens; wait for both before taking their pids.
my @workers;
for (1 .. 100) { @workers = $srv->worker_pids; last if @workers == 2; select(undef, undef, undef, 0.05) }
my $port = $srv->port;
sub send_req { RG::Fleet::send_raw($port, $_[0], 5) }
sub snap { RG::Metrics::snap($srv) }
sub fam {   # sum of a family's series with the given labels
    my ($m, $family, %l) = @_;
    my $sum = 0;
    for my $id (keys %$m) {
        my ($name, $labels) = $id =~ /^([^{]+)(.*)$/;
        next unless $name eq $family;
        next if grep { index($labels, qq{$_="$l{$_}"}) < 0 } keys %l;
        $sum += $m->{$id};
    }
    return $sum;
}

subtest 'correct answers: admitted, Redis\'s replay verdict obeyed, its admit too' => sub {
    mode('correct');
    my $req = RG::Fleet::signed();
    is(RG::Fleet::verdict(send_req($req)), '200 OK', 'a signed request: 200 OK');
    is(RG::Fleet::verdict(send_req($req)), '401 REPLAY', 'the same bytes again: 401 REPLAY');
    mode('replay');
    is(RG::Fleet::verdict(send_req(RG::Fleet::signed())), '401 REPLAY',
       'a fresh nonce that Redis says another host stored: 401 REPLAY');
    mode('admit');
    is(RG::Fleet::verdict(send_req(RG::Fleet::signed())), '200 OK', 'Redis admits: 200 OK');
    mode('correct');
};

subtest 'forged requests and token requests never reach Redis' => sub {
    mode('silent');   # a request that waited on Redis would show as a 503 or a delay
    my $before = evals();
    my $forged = RG::Fleet::signed(sign => { secret => 'not-alices-secret-0123' });
    is(RG::Fleet::verdict(send_req($forged)), '401 BAD_SIGNATURE', 'a forged MAC: 401 BAD_SIGNATURE');
    my $t = send_req(RG::Fleet::token_request());
    is($t->{status}, 200, 'a token request (no nonce, no rate limit) with Redis silent: 200');
    cmp_ok($t->{seconds}, '<', $timeout, sprintf('... at once (%.0f ms, no wait on Redis)', 1000 * $t->{seconds}));
    sleep 0.1;
    is(evals() - $before, 0, 'the fake Redis received no script for either');
    mode('correct');
};

# mode => the error kinds it may count as (the first is the one expected when unambiguous).
my @bad = (
    [truncated  => qw(protocol connect)],
    [error      => qw(error_reply)],
    [wrongpass  => qw(error_reply)],
    [unexpected => qw(protocol)],
    [badarray   => qw(protocol)],
    [nested     => qw(protocol)],
    [huge       => qw(protocol)],
    [long       => qw(protocol)],
    [reset      => qw(protocol connect)],
    [close      => qw(protocol connect)],
    [silent     => qw(timeout)],
    [slow       => qw(timeout)],
);
my %max_ms;
for my $case (@bad) {
    my ($m, @kinds) = @$case;
    subtest "$m: closed gives 503 within the timeout, local relays and counts" => sub {
        mode($m);
        my $b = snap();
        my $slowest = 0;
        for my $i (1 .. 3) {
            my $r = send_req(RG::Fleet::signed());
            my ($ok, $why) = RG::Fleet::is_unavailable($r);
            ok($ok, "closed, request $i: 503 overloaded_error, retry-after, STORE_UNAVAILABLE" . ($ok ? '' : " (got $why)"));
            ok(!$r->{timed_out}, "closed, request $i: answered (not cut by the 5 s client timeout)");
            cmp_ok($r->{seconds}, '<=', $bound, sprintf("closed, request $i: within %.1f s (%.0f ms)", $bound, 1000 * $r->{seconds}));
            $slowest = $r->{seconds} if $r->{seconds} > $slowest;
        }
        my @local;
        for my $i (1 .. 3) {
            my $req = RG::Fleet::signed(target => '/local/v1/messages');
            my $r = send_req($req);
            push @local, $req;
            is($r->{status}, 200, "local, request $i: relayed (" . RG::Fleet::verdict($r) . ")");
            cmp_ok($r->{seconds}, '<=', $bound, sprintf("local, request $i: within %.1f s (%.0f ms)", $bound, 1000 * $r->{seconds}));
            $slowest = $r->{seconds} if $r->{seconds} > $slowest;
        }
        is(RG::Fleet::verdict(send_req($local[0])), '401 REPLAY', 'local: a replay at this host is still refused (no wrong admit)');
        my $a = snap();
        is(fam($a, 'relay_guard_redis_fallbacks_total') - fam($b, 'relay_guard_redis_fallbacks_total'), 3,
           'relay_guard_redis_fallbacks_total += 3 (the local ones; closed refusals are no fallback)');
        my %d = map { $_ => fam($a, 'relay_guard_redis_errors_total', kind => $_) - fam($b, 'relay_guard_redis_errors_total', kind => $_) }
                qw(connect timeout protocol error_reply);
        my $in_kinds = 0;
        $in_kinds += $d{$_} for @kinds;
        cmp_ok($in_kinds, '>=', 6, "relay_guard_redis_errors_total{kind=~\"@kinds\"} counts every failed round trip (" .
               join(', ', map { "$_ +$d{$_}" } sort keys %d) . ')');
        $max_ms{$m} = int(1000 * $slowest);
        mode('correct');
        # Give a late answer (slow) time to arrive where a reused connection would read it.
        sleep($m eq 'slow' ? 1.0 : 0.1);
        is(RG::Fleet::verdict(send_req(RG::Fleet::signed())), '200 OK', 'Redis correct again: the next request 200 OK');
    };
}

subtest 'a late answer is never read as the next request\'s verdict' => sub {
    mode('slow');    # the correct answer ({1,0}: admitted), 900 ms late
    my ($ok) = RG::Fleet::is_unavailable(send_req(RG::Fleet::signed()));
    ok($ok, 'the slow request: 503 (timeout)');
    sleep 1.0;       # its late {1,0} has arrived by now, on whatever connection was used
    mode('replay');  # every answer from now on says "replay"
    for my $i (1 .. 8) {
        is(RG::Fleet::verdict(send_req(RG::Fleet::signed())), '401 REPLAY',
           "fresh request $i: Redis's own answer (replay), not the stale admit");
    }
    mode('correct');
};

subtest 'a client that leaves while its check is pending frees it' => sub {
    mode('silent');
    for my $i (1 .. 20) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 2) or die "connect: $!";
        $s->syswrite(RG::Fleet::signed());
        sleep 0.01;   # the check is under way: the fake Redis has the script and says nothing
        close $s;
    }
    sleep 0.5;        # past the timeout: whatever was pending has ended by now
    mode('correct');
    is(RG::Fleet::verdict(send_req(RG::Fleet::signed())), '200 OK', 'the next request: 200 OK');
    is_deeply([$srv->worker_pids], \@workers, 'the same workers');
    unlike($srv->error_log, qr/\[(alert|emerg|crit)\]/, 'no alert, crit or emerg in the error log');
};

subtest 'an internal redirect never runs the Redis check twice' => sub {
    mode('correct');
    for my $i (1 .. 3) {
        my $before = evals();
        my $req = RG::Fleet::signed(target => '/redir/v1/messages');
        $req =~ s/\r\n\r\n/\r\nx-mock-status: 404\r\n\r\n/;   # the upstream's 404 sends it to \@again
        my $r = send_req($req);
        cmp_ok($r->{status}, '>', 0, "request $i through error_page: answered (" . RG::Fleet::verdict($r) . ')');
        sleep 0.05;
        is(evals() - $before, 1, "request $i: exactly one script sent to Redis");
    }
};

subtest 'no worker crashed' => sub {
    is_deeply([$srv->worker_pids], \@workers, 'the same two workers as at the start');
    my $log = $srv->error_log;
    unlike($log, qr/exited on signal|worker process \d+ exited/, 'no worker exit in the error log');
    unlike($log, qr/mock-redis-password/, 'the Redis password is in no log line');
};
diag('slowest answer per mode (ms): ' . join(', ', map { "$_ $max_ms{$_}" } sort keys %max_ms));
$srv->stop;

subtest 'a reload while checks are in flight: each answered once, no check sent twice' => sub {
    # A second fake Redis whose correct answers take 400 ms (under this relay's 2 s timeout),
    # so the reload's HUP lands while every request waits for its answer.
    my $lport = RG::Server::free_port();
    RG::Fleet::spawn("$dir/mock_redis_lag.log", qr/listening/, 'python3', "$RG::Fleet::ROOT/scripts/mock_redis.py",
        '--listen', "127.0.0.1:$lport", '--mode-file', "$dir/lag-mode", '--stats-file', "$dir/lag-stats",
        '--slow-ms', 400);
    RG::Fleet::spew("$dir/lag-mode", 'slow');
    my $lag = RG::Server->new(name => 'redis-lag', workers => 2);
    $lag->start(RG::Fleet::http_conf(redis => "127.0.0.1:$lport", keys => "$dir/keys.json",
                                     redis_args => 'timeout=2s', zone => 'rglag:1m'));
    my @reqs = map { RG::Fleet::signed(key => $_ % 2 ? 'alice' : 'rl') } 1 .. 8;
    my %kid;
    for my $i (0 .. $#reqs) {
        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) { close $r; print $w RG::Fleet::verdict(RG::Fleet::send_raw($lag->port, $reqs[$i], 8)); close $w; POSIX::_exit(0) }
        close $w;
        $kid{$pid} = $r;
    }
    sleep 0.15;
    my %old = map { $_ => 1 } $lag->worker_pids;
    kill 'HUP', $lag->master_pid;
    my @got;
    for my $pid (sort keys %kid) { my $r = $kid{$pid}; local $/; push @got, scalar(<$r>) // ''; waitpid $pid, 0 }
    my %tally;
    $tally{$_}++ for @got;
    my $admitted = ($tally{'200 OK'} // 0) + ($tally{'429 LIMIT_RPM'} // 0);
    is($admitted, 8, 'all 8 answered by their verdict (200, or 429 for key rl past its burst): '
       . join(', ', map { "$_ x$tally{$_}" } sort keys %tally));
    my $st = JSON::PP->new->decode(RG::Fleet::slurp("$dir/lag-stats") // '{}');
    my $n = 0;
    $n += $_ for values %{ $st->{evals} || {} };
    is($n, 8, 'the fake Redis got exactly 8 checks: none sent twice across the reload');
    my $t0 = time;
    sleep 0.05 while grep({ $old{$_} } $lag->worker_pids) && time - $t0 < 5;
    ok(!grep({ $old{$_} } $lag->worker_pids), 'the old workers finished and exited');
    RG::Fleet::spew("$dir/lag-mode", 'correct');
    is(RG::Fleet::verdict(RG::Fleet::send_raw($lag->port, $reqs[0], 5)), '401 REPLAY', 'a replay of one of them: 401 REPLAY');
    unlike($lag->error_log, qr/\[alert\]|\[emerg\]|exited on signal|panicked/, 'no alert, no crash across the reload');
    $lag->stop;
};

subtest 'worker_shutdown_timeout ends requests still waiting on Redis (HTTP/1.1 and HTTP/2): none is lost, nothing touches them after' => sub {
    # Redis never answers and the relay would wait 5 s; the old workers' shutdown timer (300 ms
    # after the reload) closes every connection, the waiting requests' and the link's alike,
    # in whichever order. An HTTP/1.1 request is terminated with its connection and must be
    # detached from the link (under valgrind and ASan, a use after free here is a report); an
    # HTTP/2 stream is not (its connection waits for it), so the link's close must still run
    # it, or the worker exits with the stream's socket open.
    my $sport = RG::Server::free_port();
    my $h2port = RG::Server::free_port();
    RG::Fleet::spawn("$dir/mock_redis_stuck.log", qr/listening/, 'python3', "$RG::Fleet::ROOT/scripts/mock_redis.py",
        '--listen', "127.0.0.1:$sport", '--mode-file', "$dir/stuck-mode", '--stats-file', "$dir/stuck-stats");
    RG::Fleet::spew("$dir/stuck-mode", 'silent');
    my $stuck = RG::Server->new(name => 'redis-stuck', workers => 2, main => 'worker_shutdown_timeout 300ms;');
    my $mock = $ENV{TEST_NGINX_MOCK_PORT};
    $stuck->start(RG::Fleet::http_conf(redis => "127.0.0.1:$sport", keys => "$dir/keys.json",
                                       redis_args => 'timeout=5s', zone => 'rgstuck:1m')
                  . "    server { listen 127.0.0.1:$h2port http2;\n"
                  . "             location /v1/ { relay_guard signature; proxy_pass http://127.0.0.1:$mock; } }\n");
    my @kids;
    for my $i (1 .. 6) {
        my $pid = fork // die "fork: $!";
        if (!$pid) { RG::Fleet::send_raw($stuck->port, RG::Fleet::signed(), 8); POSIX::_exit(0) }
        push @kids, $pid;
    }
    my $body = RG::Fleet::body();
    for my $i (1 .. 4) {
        my $h = RG::sign_headers(key_id => 'alice', secret => RG::Fleet::secret_of('alice'), method => 'POST',
                                 target => '/v1/messages', body => $body);
        my @hdr = map { ('-H', $_) } split /\n/, $h;
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open STDOUT, '>', '/dev/null'; open STDERR, '>', '/dev/null';
            { exec 'curl', '-s', '--http2-prior-knowledge', '-m', '8', @hdr, '-H', 'Content-Type: application/json',
                   '--data-binary', $body, "http://127.0.0.1:$h2port/v1/messages" }
            POSIX::_exit(127);   # only if curl could not be started
        }
        push @kids, $pid;
    }
    sleep 0.5;
    my $st = JSON::PP->new->decode(RG::Fleet::slurp("$dir/stuck-stats") // '{}');
    ok(($st->{evals}{silent} // 0) >= 1, 'the checks reached the silent Redis');
    is(scalar(grep { waitpid($_, POSIX::WNOHANG()) == 0 } @kids), 10, 'after 0.5 s all 10 requests (6 HTTP/1.1, 4 HTTP/2) are still waiting');
    my %old = map { $_ => 1 } $stuck->worker_pids;
    kill 'HUP', $stuck->master_pid;
    my $t0 = time;
    sleep 0.05 while grep({ $old{$_} } $stuck->worker_pids) && time - $t0 < 4;
    my $took = time - $t0;
    ok(!grep({ $old{$_} } $stuck->worker_pids),
       sprintf('the old workers exited at their shutdown timeout (%.1f s after the reload, not the 5 s Redis timeout)', $took));
    waitpid $_, 0 for @kids;
    RG::Fleet::spew("$dir/stuck-mode", 'correct');
    is(RG::Fleet::verdict(RG::Fleet::send_raw($stuck->port, RG::Fleet::signed(), 5)), '200 OK', 'the new workers serve');
    my $log = $stuck->error_log;
    unlike($log, qr/open socket|\[alert\]|\[emerg\]|exited on signal|panicked/, 'no socket left open, no alert, no crash');
    $stuck->stop;
};

done_testing;
