# Per-key concurrent requests (issue 13): requests in flight across both workers, each slot
# released exactly once however the request ends: normal end, client abort (mid-wait and
# mid-stream), upstream errors (5xx, a cut stream, a refused connection, an internal redirect
# by error_page) and a reload while requests are in flight. The mock holds requests open
# (x-mock-delay-ms) and reports how many of each key it had at once (x-mock-inflight), so
# "never more than the cap" is measured at the upstream. A leaked slot shows as in_flight > 0
# in the usage answer and as a refusal where a full N must be admitted again; a double release
# shows as N+1 admitted.
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
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

my $dir = File::Temp::tempdir('rg-limits-conc-XXXXXX', TMPDIR => 1, CLEANUP => 1);
RG::Limits::write_keys("$dir/keys.json", keys => [
    c2     => { concurrent_requests => 2 },
    flood2 => { concurrent_requests => 2 },
    abort2 => { concurrent_requests => 2 },
    err2   => { concurrent_requests => 2 },
    dbl3   => { concurrent_requests => 3 },
    rel2   => { concurrent_requests => 2 },
    order  => { concurrent_requests => 1, requests_per_minute => 6, burst => 1 },
    dry1   => { concurrent_requests => 1 },
    off1   => { concurrent_requests => 1 },
    alice  => { concurrent_requests => 1 },
]);

my $srv = RG::Server->new(name => 'limits-conc', workers => 2);
$srv->start(RG::Limits::http_conf(keys => "$dir/keys.json"));
RG::Limits::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
*refused = \&RG::Limits::refused;
*admitted = \&RG::Limits::admitted;

# Opens $n requests of $key held $ms at the mock (counted there under $group, default $key) and
# waits until the mock has them all: they were admitted and are in flight.
sub hold {
    my ($key, $n, $ms, %o) = @_;
    my $group = $o{group} // $key;
    my $before = RG::Limits::mock_inflight($group)->{now};
    my @h = map { RG::Limits::open_request($srv, key => $key, inflight => $group, %o,
                                           mock => { 'x-mock-delay-ms' => $ms, %{ $o{mock} || {} } }) } 1 .. $n;
    my $ok = RG::Limits::wait_until(sub { RG::Limits::mock_inflight($group)->{now} >= $before + $n }, 5);
    ok($ok, "$key: $n held requests reached the upstream (admitted)");
    return @h;
}

sub in_flight { RG::Limits::in_flight($srv, $_[0]) }

# Test: in_flight of $key drops to 0 within $timeout seconds.
sub drains {
    my ($key, $name, $timeout) = @_;
    my $ok = RG::Limits::wait_until(sub { (in_flight($key) // -1) == 0 }, $timeout // 3);
    ok($ok, "$name: in_flight back to 0") or diag('in_flight ' . (in_flight($key) // 'undef'));
}

# Test: a full N is admitted again and the N+1th refused (no leak, no double release).
sub full_n_again {
    my ($key, $n, $name) = @_;
    my @h = hold($key, $n, 600, group => "$key-again");
    refused($srv, RG::Limits::messages($srv, key => $key), 'concurrency', "$name: request " . ($n + 1), min => 1, max => 1);
    admitted($srv, RG::Limits::finish($_), "$name: held request") for @h;
    drains($key, "$name, afterwards");
}

subtest 'N in flight: the N+1th refused with retry-after 1; in_flight 0 after a normal end' => sub {
    my $b = snap();
    my @h = hold('c2', 2, 1500);
    my $u = RG::Limits::usage_json($srv, 'c2');
    is_deeply($u->{concurrent_requests}, { limit => 2, in_flight => 2, remaining => 0 }, 'usage: in_flight 2, remaining 0');
    refused($srv, RG::Limits::messages($srv, key => 'c2', inflight => 'c2'), 'concurrency', 'request 3', min => 1, max => 1);
    refused($srv, RG::Limits::messages($srv, key => 'c2', inflight => 'c2'), 'concurrency', 'request 4', min => 1, max => 1);
    admitted($srv, RG::Limits::finish($_), 'held request') for @h;
    drains('c2', 'normal end');
    my $m = RG::Limits::mock_inflight('c2');
    is_deeply([$m->{max}, $m->{total}], [2, 2], 'the upstream had at most 2, and only the 2 admitted');
    is(RG::Limits::limited(snap(), 'c2', 'concurrency') - RG::Limits::limited($b, 'c2', 'concurrency'), 2,
       'relay_guard_limited_total{key="c2",limit="concurrency"} += 2');
    full_n_again('c2', 2, 'c2 again');
};

subtest 'concurrent clients on two workers never exceed the cap at the upstream' => sub {
    my ($clients, $seconds) = (5, 3);
    my @kids;
    my $end = time + $seconds;
    for my $c (1 .. $clients) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            open my $f, '>', "$dir/flood-$c" or POSIX::_exit(1);
            while (time < $end) {
                my $r = eval { RG::Limits::messages($srv, key => 'flood2', inflight => 'flood2',
                                                    mock => { 'x-mock-delay-ms' => 150 }) };
                print $f ($r ? $r->{status} : 0), ' ', ($r && $r->{headers}{'x-pid'}) // '-', "\n";
                sleep 0.01;
            }
            close $f;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    waitpid($_, 0) for @kids;
    my @rows;
    for my $c (1 .. $clients) { open my $f, '<', "$dir/flood-$c" or next; push @rows, map { [split ' '] } <$f> }
    my %n;
    $n{$_->[0]}++ for @rows;
    my %pids = map { $_->[1] => 1 } @rows;
    diag(join ', ', map { "$_: $n{$_}" } sort keys %n);
    is(scalar(grep { $_ ne '200' && $_ ne '429' } keys %n), 0, 'every answer 200 or 429');
    cmp_ok($n{200} // 0, '>=', 10, 'many admitted');
    cmp_ok($n{429} // 0, '>=', 1, 'some refused');
    cmp_ok(scalar(keys %pids), '>=', 2, 'both workers answered');
    my $m = RG::Limits::mock_inflight('flood2');
    is($m->{max}, 2, 'the upstream never had more than 2 of this key at once (and had 2)');
    is($m->{total}, $n{200} // 0, 'the upstream saw exactly the admitted ones');
    drains('flood2', 'after the clients');
};

subtest 'client aborts release the slot at once, mid-wait and mid-stream' => sub {
    my @h = hold('abort2', 2, 4000);
    close $_->{sock} for @h;
    # The mock holds both for 4 s more; the slots must free when nginx finalizes the requests.
    drains('abort2', 'clients closed while the upstream still works', 2.5);
    is(RG::Limits::mock_inflight('abort2')->{now}, 2, '... before the upstream answered (the mock still holds both)');
    is((RG::Limits::log_line($srv, $_->{tag}) || {})->{status}, 499, 'logged 499') for @h;
    full_n_again('abort2', 2, 'after aborts');
    # Streams: ten events 200 ms apart; the client reads the first bytes and leaves.
    my @s = map { RG::Limits::open_request($srv, key => 'abort2', inflight => 'abort2-sse', stream => 1,
                                           mock => { 'x-mock-sse-gap-ms' => 200, 'x-mock-sse-events' => 10 }) } 1 .. 2;
    like(RG::Limits::read_all($_->{sock}, 0.5), qr{^HTTP/1\.1 200}, 'stream started') for @s;
    refused($srv, RG::Limits::messages($srv, key => 'abort2'), 'concurrency', 'a third while two stream', max => 1);
    close $_->{sock} for @s;
    drains('abort2', 'streams left mid-way', 3);
    full_n_again('abort2', 2, 'after stream aborts');
};

subtest 'upstream errors release the slot' => sub {
    my @h = hold('err2', 2, 500, mock => { 'x-mock-status' => 500 });
    refused($srv, RG::Limits::messages($srv, key => 'err2'), 'concurrency', 'a third while two wait for a 500', max => 1);
    is(RG::Limits::finish($_)->{status}, 500, 'upstream 500 relayed') for @h;
    drains('err2', 'after upstream 500s');
    # A stream the upstream cuts after one delta.
    my @s = map { RG::Limits::open_request($srv, key => 'err2', inflight => 'err2-cut', stream => 1,
                                           mock => { 'x-mock-sse-gap-ms' => 300, 'x-mock-sse-cut' => 1 }) } 1 .. 2;
    my @got = map { RG::Limits::finish($_) } @s;
    unlike($_->{body}, qr/message_stop/, 'stream cut before message_stop') for @got;
    drains('err2', 'after cut streams');
    # Connection refused (502) and the same 502 turned into an internal redirect: three in a row
    # each, so a slot leaked by any of them refuses the third.
    for my $i (1 .. 3) {
        my $r = RG::Limits::messages($srv, key => 'err2', path => '/down/v1/messages');
        is($r->{status}, 502, "connection refused $i: 502 (not 429)");
    }
    for my $i (1 .. 3) {
        my $r = RG::Limits::messages($srv, key => 'err2', path => '/redirect/v1/messages');
        is("$r->{status} $r->{body}", '503 {"fallback":true}', "internal redirect $i: the error_page answer (not 429)");
    }
    drains('err2', 'after 502s and redirects');
    full_n_again('err2', 2, 'after upstream errors');
};

# A second release of a slot shows only while other requests hold theirs (a count at 0 has
# nothing left to lose): one request stays in flight while requests end in every way, and
# after each the count must be back to exactly that one.
subtest 'each way of ending releases exactly one slot while another is held' => sub {
    my @a = hold('dbl3', 1, 5000, group => 'dbl3-long');
    my $one = sub {
        my ($name) = @_;
        ok(RG::Limits::wait_until(sub { (in_flight('dbl3') // -1) == 1 }, 3), "$name: in_flight back to 1 (the held one)")
            or diag('in_flight ' . (in_flight('dbl3') // 'undef'));
    };
    admitted($srv, RG::Limits::messages($srv, key => 'dbl3'), 'normal end');
    $one->('normal end');
    is(RG::Limits::messages($srv, key => 'dbl3', mock => { 'x-mock-status' => 500 })->{status}, 500, 'upstream 500');
    $one->('upstream 500');
    is(RG::Limits::messages($srv, key => 'dbl3', path => '/down/v1/messages')->{status}, 502, 'connection refused');
    $one->('connection refused');
    is(RG::Limits::messages($srv, key => 'dbl3', path => '/redirect/v1/messages')->{status}, 503, 'internal redirect');
    $one->('internal redirect');
    my $r = RG::Limits::messages($srv, key => 'dbl3', stream => 1, mock => { 'x-mock-sse-cut' => 1, 'x-mock-sse-gap-ms' => 0 });
    unlike($r->{body}, qr/message_stop/, 'stream cut by the upstream');
    $one->('cut stream');
    my @b = hold('dbl3', 1, 3000, group => 'dbl3-abort');
    close $_->{sock} for @b;
    $one->('client abort');
    my @c = hold('dbl3', 2, 600, group => 'dbl3-fill');
    refused($srv, RG::Limits::messages($srv, key => 'dbl3'), 'concurrency', 'the held one and two more fill the cap of 3', max => 1);
    admitted($srv, RG::Limits::finish($_), 'filler') for @c;
    admitted($srv, RG::Limits::finish($_, 10), 'the long-held request') for @a;
    drains('dbl3', 'all ended');
};

subtest 'a reload while requests are in flight: no leak, no double release' => sub {
    my @h = hold('rel2', 2, 2500);
    my %old = map { $_ => 1 } $srv->worker_pids;
    kill 'HUP', $srv->master_pid;
    my $new = RG::Limits::wait_until(sub { my @n = grep { !$old{$_} } $srv->worker_pids; @n >= 2 }, 10);
    ok($new, 'two new workers run while the old ones finish the held requests');
    ok((grep { RG::Server::alive($_) } keys %old), 'an old worker is still shutting down') if $new;
    refused($srv, RG::Limits::messages($srv, key => 'rel2'), 'concurrency',
            'a new worker counts the old workers\' requests in flight', max => 1);
    admitted($srv, RG::Limits::finish($_), 'held across the reload') for @h;
    RG::Limits::wait_until(sub { !grep { RG::Server::alive($_) } keys %old }, 10);
    ok(!(grep { RG::Server::alive($_) } keys %old), 'the old workers exited');
    drains('rel2', 'after the reload');
    full_n_again('rel2', 2, 'after the reload');
};

subtest 'order: concurrency before rpm; a request refused by rpm releases its slot' => sub {
    my $t0 = time;
    my @h = hold('order', 1, 1000);
    # Both limits are full now: concurrency decides (and the rpm state does not move).
    refused($srv, RG::Limits::messages($srv, key => 'order'), 'concurrency', 'while one is in flight', max => 1);
    admitted($srv, RG::Limits::finish($_), 'held') for @h;
    drains('order', 'held request done');
    my $ra = refused($srv, RG::Limits::messages($srv, key => 'order'), 'rpm', 'afterwards: rpm refuses', max => 10);
    cmp_ok($ra, '<=', POSIX::ceil($t0 + 10 - time) + 1, 'retry-after counts from the one admitted request only');
    is(in_flight('order'), 0, 'the rpm refusal released its slot');
    my $u = RG::Limits::usage_json($srv, 'order');
    is($u->{concurrent_requests}{remaining}, 1, 'usage: remaining 1');
};

subtest 'dry run: the refused request is relayed and holds no slot' => sub {
    my @h = hold('dry1', 1, 1500, path => '/dry/v1/messages');
    my @h2 = hold('dry1', 1, 1500, path => '/dry/v1/messages');
    is(RG::Limits::mock_inflight('dry1')->{now}, 2, 'both at the upstream at once');
    is(in_flight('dry1'), 1, 'in_flight 1: the dry-run refusal holds no slot');
    my @r = map { RG::Limits::finish($_) } @h, @h2;
    is_deeply([map { $_->{status} } @r], [200, 200], 'both relayed');
    is_deeply([map { RG::Limits::rg_status($srv, $_) } @r], [qw(DRY_RUN_OK DRY_RUN_LIMIT_CONCURRENCY)],
              '$relay_guard_status DRY_RUN_OK, DRY_RUN_LIMIT_CONCURRENCY');
    drains('dry1', 'dry run');
};

subtest 'relay_guard_limits off: requests there take no slot' => sub {
    my @h = hold('off1', 1, 1500, path => '/nolimits/v1/messages');
    is(in_flight('off1'), 0, 'in_flight 0 while a limits-off request is in flight');
    my @h2 = hold('off1', 1, 1500);
    refused($srv, RG::Limits::messages($srv, key => 'off1'), 'concurrency', 'the cap of 1 is the enforced request\'s', max => 1);
    admitted($srv, RG::Limits::finish($_), 'held') for @h, @h2;
    drains('off1', 'limits off');
};

subtest 'signed keys, and the info log line names concurrent_requests' => sub {
    my $from = length $srv->error_log;
    my @h = hold('alice', 1, 800);
    refused($srv, RG::Limits::messages($srv, key => 'alice'), 'concurrency', 'alice (signature) second request', max => 1);
    admitted($srv, RG::Limits::finish($_), 'alice held') for @h;
    is(RG::Limits::refusal_lines(substr($srv->error_log, $from), 'alice', 'concurrent_requests'), 1,
       'one info line: relay_guard: key "alice" refused: concurrent_requests limit');
    drains('alice', 'alice');
};

RG::Limits::no_crash($srv, 'after all');
$srv->stop;
done_testing();
