# The self-service usage answer (issue 13): `relay_guard_usage;` answers GET/HEAD with JSON
# about the caller's own key only (authenticated by the location's relay_guard mode, token or
# signature): its limits, what remains and when windows reset; null for a limit the key does
# not have (tokens: []). 401 in Anthropic's shape without a verified key (dry run too), 405 for
# other methods, cache-control: no-store, and the answer itself is not subject to limits (no
# admission, no charge, no slot).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use B ();
use File::Spec;
use File::Temp ();
use POSIX qw(floor);
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Usage ();
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

# No 1h or 1d window may turn between a request and the answer checked against it.
for my $per (3600, 86400) {
    my $left = (floor(time / $per) + 1) * $per - time;
    sleep($left + 0.2) if $left < 30;
}

my $dir = File::Temp::tempdir('rg-limits-usage-XXXXXX', TMPDIR => 1, CLEANUP => 1);
sub budget { { budget => $_[0], per => $_[1] } }
RG::Limits::write_keys("$dir/keys.json",
    default_limits => { requests_per_minute => 12, burst => 4 },
    keys => [
        'u-all' => { requests_per_minute => 6, burst => 3, concurrent_requests => 2, tokens => budget(20000, '1d') },
        'u-none' => {},
        'u-dflt' => undef,
        'u-win' => { tokens => [budget(100, '1h'), budget(700, '7d'), budget(3000, '30d')] },
        'u-rpm' => { requests_per_minute => 6, burst => 2 },
        alice => { tokens => [budget(100, '5h'), budget(200, '1d')] },
        bob => { concurrent_requests => 1 },
    ]);

my $srv = RG::Server->new(name => 'limits-usage', workers => 2);
$srv->start(RG::Limits::http_conf(keys => "$dir/keys.json"));
RG::Limits::workers($srv, 2);

*usage = \&RG::Limits::usage;
*iso = \&RG::Limits::iso;
sub snap { RG::Metrics::snap($srv) }

# True when $v came out of the JSON as a number (not a string, not null).
sub is_number {
    my ($v) = @_;
    return 0 unless defined $v && !ref $v;
    my $f = B::svref_2object(\$v)->FLAGS;
    return ($f & (B::SVf_IOK | B::SVf_NOK)) && !($f & B::SVf_POK) ? 1 : 0;
}

sub keys_of { my ($h) = @_; ref $h eq 'HASH' ? join(',', sort keys %$h) : 'not an object' }

# Test: the numbers of $obj named in @fields are JSON numbers.
sub numbers {
    my ($obj, $name, @fields) = @_;
    my @bad = grep { !is_number(ref $obj eq 'HASH' ? $obj->{$_} : undef) } @fields;
    is("@bad", '', "$name: @fields are JSON numbers");
}

my $midnight = sub { floor(time / 86400) * 86400 };

subtest 'the shape and values for a fresh key with every limit' => sub {
    my $t = time;
    my $r = usage($srv, 'u-all');
    is($r->{status}, 200, '200');
    like($r->{headers}{'content-type'} // '', qr{^application/json\b}, 'content-type application/json');
    is($r->{headers}{'cache-control'}, 'no-store', 'cache-control: no-store');
    my $j = $r->{json};
    is(keys_of($j), 'concurrent_requests,key,now,requests_per_minute,tokens', 'exactly the documented fields')
        or diag($r->{body});
    is($j->{key}, 'u-all', 'key: the caller\'s id');
    my $now = RG::Limits::epoch_of($j->{now});
    ok(defined $now && abs($now - $t) <= 2, "now: ISO 8601 UTC, the current time ($j->{now})");
    my $rpm = $j->{requests_per_minute};
    is(keys_of($rpm), 'burst,full_at,limit,remaining', 'requests_per_minute fields');
    numbers($rpm, 'requests_per_minute', qw(limit burst remaining));
    is_deeply([@{ $rpm || {} }{qw(limit burst remaining)}], [6, 3, 3], 'limit 6, burst 3, remaining 3');
    my $full = RG::Limits::epoch_of($rpm->{full_at});
    ok(defined $full && $full <= $t + 1, 'full_at: already full (not later than now)');
    my $c = $j->{concurrent_requests};
    numbers($c, 'concurrent_requests', qw(limit in_flight remaining));
    is_deeply($c, { limit => 2, in_flight => 0, remaining => 2 }, 'concurrent_requests: limit 2, in_flight 0, remaining 2');
    my $d = $midnight->();
    is(ref $j->{tokens} eq 'ARRAY' && scalar @{ $j->{tokens} }, 1, 'one token window');
    my $w = ref $j->{tokens} eq 'ARRAY' ? $j->{tokens}[0] : undef;
    numbers($w, 'tokens[0]', qw(budget used remaining));
    is_deeply($w, { per => '1d', budget => 20000, used => 0, remaining => 20000,
                    window_start => iso($d), resets_at => iso($d + 86400) }, 'tokens: the day window, 00:00 to 00:00 UTC');
};

subtest 'the values after traffic' => sub {
    my $t0 = time;
    my $U = RG::Usage::usage_json(input => 100, cache_write_5m => 20, cache_write_1h => 30, output => 40, cache_read => 5000);
    for (1 .. 2) {
        is(RG::Limits::messages($srv, key => 'u-all', usage => $U)->{status}, 200, "u-all request $_ (190 counted)");
    }
    my $j;
    RG::Limits::wait_until(sub { $j = RG::Limits::usage_quiet($srv, 'u-all') || {}; ($j->{tokens}[0]{used} // 0) == 380 }, 3);
    is_deeply([@{ $j->{tokens}[0] }{qw(used remaining)}], [380, 19620], 'tokens: used 380 (no cache reads), remaining 19620');
    my $rpm = $j->{requests_per_minute};
    is($rpm->{remaining}, 1, 'requests_per_minute: remaining 1 (burst 3, two sent, one per 10 s)');
    my $full = RG::Limits::epoch_of($rpm->{full_at});
    ok(defined $full && $full >= $t0 + 18 && $full <= time + 21, 'full_at: 20 s after the two (two intervals of 10 s)')
        or diag("full_at $rpm->{full_at}, t0 " . iso($t0));
    my $h = RG::Limits::open_request($srv, key => 'u-all', inflight => 'u-all', mock => { 'x-mock-delay-ms' => 1500 });
    RG::Limits::wait_until(sub { RG::Limits::mock_inflight('u-all')->{now} == 1 }, 5);
    is_deeply(RG::Limits::usage_json($srv, 'u-all')->{concurrent_requests}, { limit => 2, in_flight => 1, remaining => 1 },
              'one held request: in_flight 1 (the usage request itself not counted)');
    is(RG::Limits::finish($h)->{status}, 200, 'held request done');
    ok(RG::Limits::wait_until(sub { (RG::Limits::in_flight($srv, 'u-all') // -1) == 0 }, 3), 'in_flight 0 again');
};

subtest 'a limit the key does not have is null; tokens []' => sub {
    my $j = RG::Limits::usage_json($srv, 'u-none');
    is(keys_of($j), 'concurrent_requests,key,now,requests_per_minute,tokens', 'the same fields');
    ok(exists $j->{requests_per_minute} && !defined $j->{requests_per_minute}, '"limits": {}: requests_per_minute null');
    ok(exists $j->{concurrent_requests} && !defined $j->{concurrent_requests}, 'concurrent_requests null');
    is_deeply($j->{tokens}, [], 'tokens []');
    like(usage($srv, 'u-none')->{body}, qr/"requests_per_minute":null/, 'written as JSON null');
    $j = RG::Limits::usage_json($srv, 'u-dflt');
    is_deeply([@{ $j->{requests_per_minute} || {} }{qw(limit burst remaining)}], [12, 4, 4], 'no own limits: default_limits apply');
    ok(!defined $j->{concurrent_requests}, '... and only those');
    is_deeply($j->{tokens}, [], '... tokens []');
};

subtest 'windows aligned as documented, per as in the keys file' => sub {
    my %want;
    my $t = time;
    for my $c (['u-win', '1h', 3600], ['u-win', '7d', 604800], ['u-win', '30d', 2592000],
               ['alice', '5h', 18000], ['alice', '1d', 86400]) {
        my ($key, $per, $s) = @$c;
        my $start = floor($t / $s) * $s;
        $want{$key}{$per} = [iso($start), iso($start + $s)];
    }
    for my $key (sort keys %want) {
        my $j = RG::Limits::usage_json($srv, $key);
        my %got = map { $_->{per} => [$_->{window_start}, $_->{resets_at}] } grep { ref $_ eq 'HASH' } @{ $j->{tokens} || [] };
        is_deeply(\%got, $want{$key}, "$key: every window from its start to its reset") or diag(explain(\%got));
    }
    my @g = gmtime(floor($t / 604800) * 604800);
    is_deeply([@g[6, 2, 1, 0]], [4, 0, 0, 0], 'the 7d window starts on a Thursday at 00:00 UTC');
};

subtest 'signature keys: the usage of the signer' => sub {
    my $r = usage($srv, 'alice');
    is($r->{status}, 200, 'alice (signature over GET /relay-guard/usage): 200');
    is(ref $r->{json} eq 'HASH' && $r->{json}{key}, 'alice', 'key alice');
};

subtest '401 without a verified key, in Anthropic\'s shape; dry run too' => sub {
    my @cases = (
        ['no credentials', usage($srv, '-')],
        ['a wrong token', usage($srv, '-', headers => "Authorization: Bearer tok-u-all-wrong\n")],
        ['a bad signature', usage($srv, '-', headers => RG::sign_headers(key_id => 'alice', secret => 'wrong-secret-0123456789',
                                                                        method => 'GET', target => '/relay-guard/usage'))],
        ['dry run, no credentials', usage($srv, '-', path => '/dry-usage')],
        ['dry run, a wrong token', usage($srv, '-', path => '/dry-usage', headers => "Authorization: Bearer nope-nope-nope-nope\n")],
    );
    for my $c (@cases) {
        my ($name, $r) = @$c;
        is($r->{status}, 401, "$name: 401");
        my $j = $r->{json};
        ok(ref $j eq 'HASH' && ($j->{type} // '') eq 'error' && ref $j->{error} eq 'HASH'
           && ($j->{error}{type} // '') eq 'authentication_error', "$name: authentication_error")
            or diag($r->{body});
        unlike($r->{body}, qr/u-all|alice|"tokens"/, "$name: nothing about any key");
    }
    my $r = usage($srv, 'u-all', path => '/dry-usage');
    is($r->{status}, 200, 'dry run with a good token: 200');
    is(ref $r->{json} eq 'HASH' && $r->{json}{key}, 'u-all', '... its own key');
};

subtest 'one key cannot see another' => sub {
    my $r = usage($srv, 'u-rpm', path => '/relay-guard/usage?key=alice');
    is($r->{status}, 200, 'a query naming another key: 200');
    is(ref $r->{json} eq 'HASH' && $r->{json}{key}, 'u-rpm', '... about the caller only');
    $r = usage($srv, 'bob');
    is(ref $r->{json} eq 'HASH' && $r->{json}{key}, 'bob', 'bob gets bob');
    is_deeply($r->{json}{concurrent_requests}, { limit => 1, in_flight => 0, remaining => 1 }, '... with bob\'s own limit');
    unlike($r->{body}, qr/u-all|u-rpm|alice|20000/, 'and nothing of other keys');
};

subtest 'GET and HEAD only' => sub {
    for my $m (qw(POST PUT DELETE PATCH)) {
        is(usage($srv, 'u-none', method => $m)->{status}, 405, "$m (token): 405");
    }
    is(usage($srv, 'alice', method => 'POST')->{status}, 405, 'POST (signature): 405');
    my $r = usage($srv, 'u-none', method => 'HEAD');
    is($r->{status}, 200, 'HEAD: 200');
    is($r->{body}, '', 'HEAD: no body');
    like($r->{headers}{'content-type'} // '', qr{^application/json\b}, 'HEAD: content-type application/json');
};

subtest 'not subject to limits: no admission, no charge, no slot' => sub {
    my $b = snap();
    is(usage($srv, 'u-rpm')->{status}, 200, "u-rpm usage $_") for 1 .. 8;
    is(RG::Limits::usage_json($srv, 'u-rpm')->{requests_per_minute}{remaining}, 2, 'nine usage answers later: remaining still 2');
    is(RG::Limits::messages($srv, key => 'u-rpm')->{status}, 200, "u-rpm request $_") for 1 .. 2;
    is(RG::Limits::messages($srv, key => 'u-rpm')->{status}, 429, 'u-rpm request 3: 429');
    is(usage($srv, 'u-rpm')->{status}, 200, 'usage while the key is refused: 200');
    my $j = RG::Limits::usage_json($srv, 'u-all');
    my $used = $j->{tokens}[0]{used};
    usage($srv, 'u-all') for 1 .. 3;
    is(RG::Limits::usage_json($srv, 'u-all')->{tokens}[0]{used}, $used, 'usage answers charge no tokens');
    my $h = RG::Limits::open_request($srv, key => 'bob', inflight => 'bob', mock => { 'x-mock-delay-ms' => 1000 });
    RG::Limits::wait_until(sub { RG::Limits::mock_inflight('bob')->{now} == 1 }, 5);
    my $r = usage($srv, 'bob');
    is($r->{status}, 200, 'bob at his concurrency cap: usage still 200');
    is(ref $r->{json} eq 'HASH' && $r->{json}{concurrent_requests}{in_flight}, 1, '... in_flight 1');
    is(RG::Limits::finish($h)->{status}, 200, 'bob\'s held request done');
    my $a = snap();
    is(RG::Limits::limited($a, 'u-rpm', 'rpm') - RG::Limits::limited($b, 'u-rpm', 'rpm'), 1,
       'limited_total: only the one refused message request');
    is(RG::Limits::limited($a, 'bob', 'concurrency') - RG::Limits::limited($b, 'bob', 'concurrency'), 0,
       'the usage answer was not refused for concurrency');
};

subtest 'shipped: location = /relay-guard/usage' => sub {
    my $re = qr/^\s*location\s*=\s*\/relay-guard\/usage\s*\{[^}]*\brelay_guard_usage\s*;/m;
    my %text = map { $_ => RG::Limits::slurp(File::Spec->catfile($RG::Metrics::ROOT, 'nginx-conf', $_)) // '' }
               qw(locations.conf nginx.conf tls-server.conf);
    # Beside each server's relay_guard mode: the usage answer needs one, and locations.conf must
    # still pass nginx -t when included in a server without (t/020 checks that).
    like($text{'nginx.conf'}, $re, 'the shipped nginx.conf serves it');
    like($text{'tls-server.conf'}, $re, 'the shipped tls-server.conf serves it');
    unlike($text{'locations.conf'}, $re, 'not in locations.conf, which works in any server');
};

RG::Limits::no_crash($srv, 'after all');
$srv->stop;
done_testing();
