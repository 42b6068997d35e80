# Label cardinality: `keys=N` bounds the key ids that get their own series (the rest share
# key="other", unverified requests key="-"), and a scrape of hundreds of keys stays valid for
# Prometheus's parser and fast. Uses t/lib/RG/Server.pm with plain Test::More, like 030.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use JSON::PP ();
use RG;
use RG::Server;
use RG::Metrics qw();

my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';
plan skip_all => "no $RG::Metrics::PYTHON (run scripts/setup)" unless -x $RG::Metrics::PYTHON;

my $http = <<"EOC";
    relay_guard_zone ZONE;
    relay_guard_keys KEYS;
    server {
        listen 127.0.0.1:PORT reuseport;
        location / {
            relay_guard any;
            add_header X-RG-Key \$relay_guard_key_id always;
            proxy_pass http://127.0.0.1:$mock;
        }
        location = /metrics {
            relay_guard_metrics;
        }
    }
EOC

sub conf {
    my (%a) = @_;
    (my $c = $http) =~ s/ZONE/$a{zone}/;
    $c =~ s/KEYS/$a{keys}/;
    return $c;
}

*delta = \&RG::Metrics::delta;
*val = \&RG::Metrics::val;

sub signed { my ($srv, $key) = @_;
    $srv->request('GET', '/v1/models', RG::Metrics::signed_headers($key, 'GET', '/v1/models')) }
sub token { my ($srv, $tok) = @_;
    $srv->request('GET', '/v1/models', RG::Metrics::token_headers($tok)) }

subtest 'keys=2: two keys get series, the third and later share key="other"' => sub {
    my $srv = RG::Server->new(name => 'metrics-keys2', workers => 2);
    $srv->start(conf(zone => 'rg:1m keys=2', keys => "$data/keys.json"));
    my $b = RG::Metrics::snap($srv);
    is(val($b, 'relay_guard_key_slots_max'), 2, 'key_slots_max 2');
    is(val($b, 'relay_guard_keys_tracked'), 0, 'no key tracked yet');
    is(signed($srv, 'alice')->{status}, 200, 'alice (signature)') for 1 .. 2;
    is(signed($srv, 'bob')->{status}, 200, 'bob (signature)') for 1 .. 3;
    my $r = token($srv);
    is($r->{status}, 200, 'team-a (token)');
    is($r->{headers}{'x-rg-key'}, 'team-a', '... verified as team-a');
    is(token($srv)->{status}, 200, 'team-a again');
    is(signed($srv, 'alice')->{status}, 200, 'alice again, after the slots filled');
    is(token($srv, 'wrong-token-0123456789')->{status}, 401, 'a rejected request');
    my $a = RG::Metrics::snap($srv);
    is(val($a, 'relay_guard_keys_tracked'), 2, 'keys_tracked 2');
    is(val($a, 'relay_guard_requests_total', key => 'alice', class => '2xx'), 3, 'alice: own series, 3');
    is(val($a, 'relay_guard_requests_total', key => 'bob', class => '2xx'), 3, 'bob: own series, 3');
    is(val($a, 'relay_guard_requests_total', key => 'other', class => '2xx'), 2, 'team-a counted as other: 2');
    is(val($a, 'relay_guard_auth_total', key => 'other', outcome => 'OK'), 2, '... with outcome OK');
    is(val($a, 'relay_guard_request_duration_seconds_count', key => 'other'), 2, '... and in the histograms');
    is(val($a, 'relay_guard_auth_total', key => '-', outcome => 'BAD_TOKEN'), 1, 'the rejected one under "-"');
    my %keys = map { /key="([^"]*)"/ ? ($1 => 1) : () } keys %$a;
    is_deeply([sort keys %keys], [sort qw(- alice bob other)], 'no other key label exists');
    my ($rc, $out) = RG::Metrics::check_exposition(RG::Metrics::scrape($srv)->{body});
    is($rc, 0, 'exposition valid') or diag($out);
    $srv->reload;
    my $c = RG::Metrics::snap($srv);
    is_deeply(RG::Metrics::changed($a, $c, 'relay_guard_'), {}, 'all unchanged by a reload');
    is(token($srv)->{status}, 200, 'team-a after the reload');
    is(delta($c, RG::Metrics::snap($srv), 'relay_guard_requests_total', key => 'other', class => '2xx'), 1,
       '... still under other');
    $srv->stop;
};

subtest 'changing keys= on reload with the same zone is refused; the old workers keep counting' => sub {
    my $srv = RG::Server->new(name => 'metrics-keyschange', workers => 1);
    $srv->start(conf(zone => 'rg:1m keys=2', keys => "$data/keys.json"));
    is(signed($srv, 'alice')->{status}, 200, 'alice');
    my $b = RG::Metrics::snap($srv);
    my @w = $srv->worker_pids;
    $srv->write_conf(conf(zone => 'rg:1m keys=3', keys => "$data/keys.json"));
    kill 'HUP', $srv->master_pid;
    my $log = '';
    for (1 .. 100) {
        $log = $srv->error_log;
        last if $log =~ /keys=3 differs/;
        select(undef, undef, undef, 0.05);
    }
    like($log, qr/\[emerg\].*keys=3 differs from the running keys=2/, 'emerg names both values');
    is_deeply([$srv->worker_pids], \@w, 'the old workers still run');
    is(signed($srv, 'alice')->{status}, 200, 'alice again');
    my $a = RG::Metrics::snap($srv);
    is(val($a, 'relay_guard_key_slots_max'), 2, 'still keys=2');
    is(delta($b, $a, 'relay_guard_requests_total', key => 'alice', class => '2xx'), 1, 'still counting');
    $srv->stop;
};

subtest '300 verified keys with keys=1000: every key its own series, valid and fast to scrape' => sub {
    my $n = 300;
    my $srv = RG::Server->new(name => 'metrics-many', workers => 2);
    my $dir = $srv->root . '-keys';
    mkdir $dir;
    my @keys = map { { id => sprintf('k%03d', $_), token => sprintf('many-keys-token-%03d-0123456789', $_) } } 1 .. $n;
    # The longest id the keys file allows, with every punctuation character it allows.
    my $long = 'Team.Long_id-' . ('x' x 51);
    push @keys, { id => $long, token => 'longest-id-token-0123456789' };
    my $json = JSON::PP->new->utf8->canonical->encode(
        { keys => [ map { { id => $_->{id}, token_sha256 => sha256_hex($_->{token}) } } @keys ] });
    open my $f, '>', "$dir/keys.json" or die $!;
    print $f $json;
    close $f;
    $srv->start(conf(zone => 'rg:4m keys=1000', keys => "$dir/keys.json"));
    my $fails = 0;
    for my $k (@keys) {
        my $r = token($srv, $k->{token});
        $fails++ if $r->{status} != 200;
    }
    is($fails, 0, scalar(@keys) . ' requests, one per key, all 200');
    # A few keys twice more, with upstream errors, so more than one family has rows.
    token($srv, $keys[$_]{token}) for 0 .. 9;
    $srv->request('GET', '/v1/models', RG::Metrics::token_headers($keys[0]{token}, 'x-mock-status' => 529));
    my ($r, $dt) = RG::Metrics::scrape($srv);
    ok($dt < 1, sprintf('scrape of %d keys took %.3f s (< 1 s)', scalar @keys, $dt));
    my ($rc, $out) = RG::Metrics::check_exposition($r->{body});
    is($rc, 0, "check_prometheus.py accepts it ($out)") or diag($out);
    my $m = RG::Metrics::parse($r->{body});
    is(val($m, 'relay_guard_keys_tracked'), scalar @keys, 'keys_tracked ' . scalar @keys);
    is(val($m, 'relay_guard_key_slots_max'), 1000, 'key_slots_max 1000');
    my @missing = grep { val($m, 'relay_guard_requests_total', key => $_->{id}, class => '2xx') != 1 }
                  @keys[10 .. $n - 1];
    is(scalar @missing, 0, 'keys 11..300: requests_total{class=2xx} == 1 each');
    is(val($m, 'relay_guard_requests_total', key => 'k001', class => '2xx'), 2, 'k001: 2');
    is(val($m, 'relay_guard_errors_total', key => 'k001', source => 'upstream'), 1, 'k001: one upstream error');
    is(val($m, 'relay_guard_requests_total', key => 'other', class => '2xx'), 0, 'nothing under other');
    is(val($m, 'relay_guard_requests_total', key => $long, class => '2xx'), 1, 'the 64-character id has its series');
    my $h = RG::Metrics::scrape($srv, '/metrics?format=html');
    my $rows = () = $h->{body} =~ /<tr><td>/g;
    ok($rows >= @keys && $h->{body} =~ /<td>\Q$long\E</, "the HTML summary has a row per key ($rows rows)")
        or diag(substr($h->{body}, 0, 2000));
    $srv->stop;
};

done_testing();
