# Replay protection as deployed: several workers, HUP reloads, the ±30 s window signed at the
# moment of sending, and a nonce store filled to capacity. Test::Nginx::Socket cannot drive
# these (loops, reloads mid-test), so this file uses t/lib/RG/Server.pm with plain Test::More.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Time::HiRes qw(time sleep);
use HTTP::Date ();
use RG;
use RG::Server;

my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
my $data = $ENV{TEST_NGINX_DATA_DIR};

my $http = <<"EOC";
    relay_guard_zone rg:1m;
    relay_guard_keys KEYS;
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            relay_guard signature;
            add_header X-Pid \$pid always;
            add_header X-RG-Status \$relay_guard_status always;
            proxy_pass http://127.0.0.1:$mock;
        }
    }
EOC

sub signed_get {
    my ($srv, %a) = @_;
    my $h = $a{headers} // RG::sign_headers(method => 'GET', target => '/v1/models', %a);
    my $r = $srv->request('GET', '/v1/models', $h);
    return ($r, $h);
}

# Waits until the current second has just begun, so that "now" is the same second in this
# process and in nginx's cached clock when the request lands.
sub at_second_start {
    my $frac = time() - int(time());
    sleep(1.02 - $frac) if $frac > 0.2;
}

my $srv = RG::Server->new(name => 'replay', workers => 2);
(my $conf = $http) =~ s/KEYS/$data\/keys.json/;
$srv->start($conf);

subtest 'the ±30 s window, signed at the moment of sending' => sub {
    for my $case ([-31, 401], [31, 401], [-29, 200], [29, 200], [0, 200]) {
        my ($skew, $want) = @$case;
        # The verdict is only meaningful when nginx handled the request in the second it was
        # signed in; its Date header says which second that was. A loaded machine can push a
        # request past a second boundary, so such attempts are retried, not judged.
        my ($r, $same_second);
        for (1 .. 5) {
            at_second_start();
            my $signed_at = int(time());
            ($r) = signed_get($srv, skew => $skew);
            my $served_at = HTTP::Date::str2time($r->{headers}{date} // '') // -1;
            $same_second = $served_at == $signed_at and last;
        }
        ok($same_second, "timestamp ${skew}s from now: signed and served in the same second");
        is($r->{status}, $want, "timestamp ${skew}s from now -> $want");
        is($r->{headers}{'x-rg-status'}, 'STALE', '... as STALE') if $want == 401;
        like($r->{body}, qr/the allowed window is ±30s/, '... with the window in the message')
            if $want == 401;
    }
};

subtest 'a nonce accepted by one worker is rejected by another' => sub {
    my ($first, $h) = signed_get($srv);
    is($first->{status}, 200, 'first use accepted');
    my $pid1 = $first->{headers}{'x-pid'};
    my ($other, $tries) = (undef, 0);
    while (!$other && $tries++ < 60) {
        my $r = $srv->request('GET', '/v1/models', $h);
        is($r->{status}, 401, "replay $tries rejected") or last;
        $other = $r if $r->{headers}{'x-pid'} ne $pid1;
    }
    ok($other, "a replay landed on a second worker (pids $pid1 and "
               . ($other ? $other->{headers}{'x-pid'} : 'none') . ")");
    is($other && $other->{headers}{'x-rg-status'}, 'REPLAY', 'and was rejected as REPLAY there');
};

subtest 'nonces survive nginx -s reload (HUP); a changed keys file is picked up' => sub {
    my ($first, $h) = signed_get($srv);
    is($first->{status}, 200, 'accepted before the reload');
    my @before = $srv->worker_pids;
    $srv->reload;
    my @after = $srv->worker_pids;
    isnt("@after", "@before", "workers replaced (@before -> @after)");
    my $r = $srv->request('GET', '/v1/models', $h);
    is($r->{status}, 401, 'replay after the reload rejected');
    is($r->{headers}{'x-rg-status'}, 'REPLAY', '... as REPLAY');
};

subtest 'reload re-reads the keys file' => sub {
    my $keys = $srv->root . '/conf/keys.json';
    my $write = sub { open my $f, '>', $keys or die $!; print $f shift; close $f };
    $write->('{"keys":[{"id":"alice","secrets":["alice-secret-0123456789"]}]}');
    (my $c = $http) =~ s/KEYS/$keys/;
    $srv->write_conf($c);
    $srv->reload;
    my ($r) = signed_get($srv, key_id => 'carol', secret => 'carol-secret-0123456789');
    is($r->{status}, 401, 'carol unknown');
    $write->('{"keys":[{"id":"carol","secrets":["carol-secret-0123456789"]}]}');
    $srv->reload;
    ($r) = signed_get($srv, key_id => 'carol', secret => 'carol-secret-0123456789');
    is($r->{status}, 200, 'carol known after the reload');
    ($r) = signed_get($srv);
    is($r->{status}, 401, 'alice removed after the reload');
};
$srv->stop;

subtest 'a full store fails closed with 503 and never evicts a live nonce' => sub {
    my $tiny = RG::Server->new(name => 'full', workers => 2);
    (my $c = $http) =~ s/KEYS/$data\/keys.json/;
    $c =~ s/rg:1m/rg_tiny:48k keys=1/;
    $tiny->start($c);
    my (@accepted, $full);
    for my $i (1 .. 5000) {
        my ($r, $h) = signed_get($tiny);
        if ($r->{status} == 200) { push @accepted, $h; next }
        $full = $r;
        last;
    }
    ok(@accepted > 100, scalar(@accepted) . " nonces accepted before the store filled");
    ok($full, 'then a fresh nonce was refused');
    is($full->{status}, 503, '... with 503');
    is($full->{headers}{'retry-after'}, '1', '... and retry-after');
    like($full->{body}, qr/"type":"overloaded_error"/, '... and an overloaded_error body');
    # More refusals: the warning is rate-limited to one per 10 s.
    signed_get($tiny) for 1 .. 20;
    my @warnings = $tiny->error_log =~ /the nonce store is full/g;
    is(scalar @warnings, 1, 'one "store full" warning for 21 refusals');
    my $evicted = grep { $tiny->request('GET', '/v1/models', $_)->{status} != 401 } @accepted;
    is($evicted, 0, 'every accepted nonce is still rejected as a replay');
    $tiny->stop;
};

done_testing();
