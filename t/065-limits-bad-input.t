# Bad input for the per-key limits (issue 13): every byte of the keys file and of the state
# file is input. `nginx -t` refuses negative, zero, fractional, absurd and mistyped limits,
# unknown windows, unknown or repeated fields and a limits-without-zone configuration, with an
# [emerg] that names the file, the key (`key #2: id "alice"`) or default_limits, the field and
# what was expected, and never a value from the file; the extremes of every range are accepted.
# The directives refuse bad arguments. At run time, hostile state files (absurd numbers,
# wrong types, deep nesting, a huge key) and a bad keys file on reload crash nothing: the
# master keeps serving with its old configuration, and no other key's counters change.
# Plain Test::More: `nginx -t` on prefixes built here, and RG::Server for the runtime cases.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use POSIX qw(floor);
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

my $nginx = join ' ', RG::Server::nginx_cmd();
my @modules = split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
my $port = RG::Server::free_port();

# A keys file whose second key (alice) has the limits LIMITS (raw JSON text), or with the
# top-level default_limits DEFAULT; the first key is a plain token key.
my $K0 = '{"id":"k0","token_sha256":"' . sha256_hex('k0-token-0123456789') . '"}';
my $ALICE = '{"id":"alice","secrets":["' . $RG::Metrics::SECRETS{alice} . '"]';
sub keys_with { my ($limits) = @_; qq({"keys":[$K0,$ALICE,"limits":$limits}]}) }
sub keys_default { my ($d) = @_; qq({"default_limits":$d,"keys":[$K0,$ALICE}]}) }

# A prefix with conf/keys.json = $keys and an nginx.conf around it. zone => 0: no
# relay_guard_zone; http, server, location: more lines at that level.
sub prefix {
    my (%o) = @_;
    my $p = tempdir('rg-limits-bad-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    make_path("$p/conf", "$p/logs");
    RG::Limits::spew("$p/conf/keys.json", $o{keys} // qq({"keys":[$K0,$ALICE}]}));
    my $zone = ($o{zone} // 1) ? "    relay_guard_zone rg:1m;\n" : '';
    RG::Limits::spew("$p/conf/nginx.conf", join('', map { "load_module $_;\n" } @modules)
        . "pid $p/logs/nginx.pid;\nerror_log $p/logs/error.log;\nevents { worker_connections 64; }\n"
        . "http {\n$zone    relay_guard_keys $p/conf/keys.json;\n" . ($o{http} // '')
        . "\n    server {\n        listen 127.0.0.1:$port;\n" . ($o{server} // '')
        . "\n        location / {\n            relay_guard token;\n" . ($o{location} // '')
        . "\n            return 204;\n        }\n    }\n}\n");
    return $p;
}

# (exit ok, output) of nginx -t on the prefix.
sub nginx_t {
    my ($p) = @_;
    my $out = `$nginx -t -p $p/ -c $p/conf/nginx.conf 2>&1`;
    return ($? == 0, $out);
}

# Test: nginx -t refuses $keys. %o: ctx (default the alice key), field (a regex or string that
# must appear), want (a regex for "what was expected"), poison (strings from the file that must
# not appear), zone.
sub refuses {
    my ($name, $keys, %o) = @_;
    my $p = prefix(keys => $keys, zone => $o{zone});
    my ($ok, $out) = nginx_t($p);
    ok(!$ok, "$name: nginx -t fails");
    my ($line) = grep { /\[emerg\]/ } split /\n/, $out;
    $line //= '';
    ok($line ne '', "$name: an [emerg]") or diag($out);
    like($line, qr/\Q$p\E\/conf\/keys\.json/, "$name: names the keys file");
    my $ctx = $o{ctx} // 'key #2: id "alice"';
    like($line, qr/\Q$ctx\E/, "$name: names $ctx");
    if (defined $o{field}) {
        my $re = ref $o{field} ? $o{field} : qr/\b\Q$o{field}\E\b/;
        like($line, $re, "$name: names the field");
    }
    like($line, $o{want} // qr/must|expected|want|between|at most|at least|only|\.\./, "$name: says what was expected")
        if !exists $o{want} || defined $o{want};
    my $clean = $line =~ s/\Q$p\E//gr;
    for my $v (@{ $o{poison} || [] }) {
        unlike($clean, qr/\Q$v\E/, "$name: does not quote \"$v\" from the file");
    }
    return $line;
}

subtest 'requests_per_minute and burst' => sub {
    my $f = 'requests_per_minute';
    refuses('rpm 0', keys_with('{"requests_per_minute":0}'), field => $f, want => qr/1000000/);
    refuses('rpm negative', keys_with('{"requests_per_minute":-7777}'), field => $f, poison => ['7777']);
    refuses('rpm over 1000000', keys_with('{"requests_per_minute":1000001}'), field => $f, poison => ['1000001'], want => qr/1000000/);
    refuses('rpm beyond u64', keys_with('{"requests_per_minute":98765432109876543210}'), field => $f,
            poison => ['98765432109876543210', '9876543']);
    refuses('rpm fractional', keys_with('{"requests_per_minute":61.5}'), field => $f, poison => ['61.5']);
    refuses('rpm with an exponent', keys_with('{"requests_per_minute":6e1}'), field => $f, poison => ['6e1']);
    refuses('rpm a string', keys_with('{"requests_per_minute":"4242"}'), field => $f, poison => ['4242']);
    refuses('rpm null', keys_with('{"requests_per_minute":null}'), field => $f);
    refuses('rpm true', keys_with('{"requests_per_minute":true}'), field => $f);
    refuses('rpm twice', keys_with('{"requests_per_minute":10,"requests_per_minute":20}'), field => $f,
            want => qr/twice|more than once|duplicate/);
    refuses('burst without rpm', keys_with('{"burst":5}'), field => 'burst', want => qr/requests_per_minute/);
    refuses('burst 0', keys_with('{"requests_per_minute":10,"burst":0}'), field => 'burst');
    refuses('burst over 1000000', keys_with('{"requests_per_minute":10,"burst":3333333}'), field => 'burst', poison => ['3333333']);
};

subtest 'concurrent_requests' => sub {
    my $f = 'concurrent_requests';
    refuses('concurrency 0', keys_with('{"concurrent_requests":0}'), field => $f, want => qr/100000\b/);
    refuses('concurrency over 100000', keys_with('{"concurrent_requests":100001}'), field => $f, poison => ['100001']);
    refuses('concurrency negative', keys_with('{"concurrent_requests":-3}'), field => $f);
    refuses('concurrency an array', keys_with('{"concurrent_requests":[8]}'), field => $f);
};

subtest 'tokens: budget and per' => sub {
    my $t = sub { keys_with(qq({"tokens":$_[0]})) };
    refuses('budget 0', $t->('{"budget":0,"per":"1d"}'), field => 'budget');
    refuses('budget 2^40', $t->('{"budget":1099511627776,"per":"1d"}'), field => 'budget', poison => ['1099511627776'],
            want => qr/1099511627775|2\^40/);
    refuses('budget negative', $t->('{"budget":-5555,"per":"1d"}'), field => 'budget', poison => ['5555']);
    refuses('budget a string', $t->('{"budget":"8888","per":"1d"}'), field => 'budget', poison => ['8888']);
    refuses('budget missing', $t->('{"per":"1d"}'), field => 'budget', want => undef);
    refuses('per missing', $t->('{"budget":100}'), field => 'per', want => undef);
    refuses('per 0s', $t->('{"budget":100,"per":"0s"}'), field => 'per');
    refuses('per over 366d', $t->('{"budget":100,"per":"367d"}'), field => 'per', poison => ['367d']);
    refuses('per over 366d in minutes', $t->('{"budget":100,"per":"527041m"}'), field => 'per', poison => ['527041']);
    refuses('per beyond u64', $t->('{"budget":100,"per":"99999999999999999999d"}'), field => 'per', poison => ['9999999999']);
    refuses('per with an unknown unit', $t->('{"budget":100,"per":"13w"}'), field => 'per', poison => ['13w']);
    refuses('per fractional', $t->('{"budget":100,"per":"1.5h"}'), field => 'per', poison => ['1.5h']);
    refuses('per without a unit', $t->('{"budget":100,"per":"3600"}'), field => 'per', poison => ['3600']);
    refuses('per empty', $t->('{"budget":100,"per":""}'), field => 'per');
    refuses('per with spaces', $t->('{"budget":100,"per":" 1d"}'), field => 'per');
    refuses('per a number', $t->('{"budget":100,"per":86400}'), field => 'per', poison => ['86400']);
    refuses('an unknown field in a window', $t->('{"budget":100,"per":"1d","sk-ant-leak-5e4d3c":1}'),
            want => qr/unknown field/, poison => ['sk-ant-leak-5e4d3c']);
    refuses('budget twice', $t->('{"budget":100,"budget":200,"per":"1d"}'), field => 'budget',
            want => qr/twice|more than once|duplicate/);
};

subtest 'tokens: the array of windows, and its type' => sub {
    my $t = sub { keys_with(qq({"tokens":$_[0]})) };
    refuses('an empty array', $t->('[]'), field => 'tokens');
    refuses('four windows', $t->('[{"budget":1,"per":"1h"},{"budget":2,"per":"1d"},{"budget":3,"per":"7d"},{"budget":4,"per":"30d"}]'),
            field => 'tokens');
    refuses('the same per twice', $t->('[{"budget":1,"per":"17h"},{"budget":2,"per":"17h"}]'), field => qr/\bper\b/,
            want => qr/distinct|already|twice|duplicate|more than once|must/, poison => ['17h']);
    refuses('a string', $t->('"1000/1d"'), field => 'tokens', poison => ['1000/1d']);
    refuses('a number', $t->('20000000'), field => 'tokens', poison => ['20000000']);
    refuses('an array of numbers', $t->('[5]'), field => 'tokens');
};

subtest 'the limits object and default_limits' => sub {
    refuses('limits an array', keys_with('[]'), field => 'limits');
    refuses('limits a string', keys_with('"gold-tier-7"'), field => 'limits', poison => ['gold-tier-7']);
    refuses('limits a number', keys_with('120'), field => 'limits');
    refuses('an unknown field', keys_with('{"sk-ant-api03-pasted-here":5}'), want => qr/unknown field.*requests_per_minute/,
            poison => ['sk-ant-api03-pasted-here']);
    refuses('a field in the wrong case', keys_with('{"Requests_Per_Minute":5}'), want => qr/unknown field/,
            poison => ['Requests_Per_Minute']);
    refuses('limits twice', qq({"keys":[$K0,$ALICE,"limits":{},"limits":{}}]}), field => 'limits',
            want => qr/twice|more than once|duplicate/);
    refuses('default_limits: rpm 0', keys_default('{"requests_per_minute":0}'), ctx => 'default_limits',
            field => 'requests_per_minute');
    refuses('default_limits: bad per', keys_default('{"tokens":{"budget":1,"per":"9y"}}'), ctx => 'default_limits',
            field => 'per', poison => ['9y']);
    refuses('default_limits an array', keys_default('[]'), ctx => 'default_limits');
    refuses('default_limits: an unknown field', keys_default('{"speed-4711":1}'), ctx => 'default_limits',
            want => qr/unknown field/, poison => ['speed-4711']);
    refuses('default_limits twice', qq({"default_limits":{},"default_limits":{},"keys":[$K0]}), ctx => 'default_limits',
            want => qr/twice|more than once|duplicate/);
    refuses('a key listed twice, one with limits',
            qq({"keys":[$ALICE,"limits":{"requests_per_minute":5}},$ALICE}]}), want => qr/twice/);
};

subtest 'the extremes of every range are accepted' => sub {
    my $keys = qq({"default_limits":{"tokens":{"budget":1,"per":"30d"}},"keys":[$K0,)
             . qq($ALICE,"limits":{"requests_per_minute":1000000,"burst":1000000,"concurrent_requests":100000,)
             . qq("tokens":[{"budget":1099511627775,"per":"366d"},{"budget":1,"per":"1s"},{"budget":7,"per":"90m"}]}},)
             . qq({"id":"k1","token_sha256":"${\ sha256_hex('k1')}","limits":{"requests_per_minute":1,"burst":1,"concurrent_requests":1,"tokens":{"budget":1,"per":"5h"}}},)
             . qq({"id":"k2","token_sha256":"${\ sha256_hex('k2')}","limits":{}}]});
    my ($ok, $out) = nginx_t(prefix(keys => $keys));
    ok($ok, 'nginx -t accepts rpm/burst 1000000, concurrency 100000, budget 2^40-1, per 366d, 1s, 90m, three windows')
        or diag($out);
    unlike($out, qr/\[(warn|emerg)\]/, 'without a warning');
    ($ok, $out) = nginx_t(prefix(keys => keys_with('{"tokens":{"budget":5,"per":"8784h"}}')));
    ok($ok, 'per 8784h (= 366d) accepted') or diag($out);
};

subtest 'limits need relay_guard_zone' => sub {
    for my $c (['a key with limits', keys_with('{"requests_per_minute":5}')],
               ['default_limits', keys_default('{"concurrent_requests":2}')]) {
        my ($name, $keys) = @$c;
        my ($ok, $out) = nginx_t(prefix(keys => $keys, zone => 0));
        ok(!$ok, "$name without a zone: nginx -t fails");
        like($out, qr/\[emerg\].*relay_guard_zone/, "$name: the [emerg] names relay_guard_zone");
    }
    my ($ok, $out) = nginx_t(prefix(keys => qq({"keys":[$K0]}), zone => 0));
    ok($ok, 'no limits, token mode: no zone needed (as before)') or diag($out);
};

subtest 'directive arguments' => sub {
    my @cases = (
        ['relay_guard_limits maybe', location => 'relay_guard_limits maybe;', qr/invalid value "maybe" in "relay_guard_limits".*"on" or "off"/],
        ['relay_guard_limits twice', location => "relay_guard_limits on;\nrelay_guard_limits off;", qr/"relay_guard_limits" directive is duplicate/],
        ['relay_guard_state_file in server{}', server => 'relay_guard_state_file /tmp/rg-state.json;', qr/"relay_guard_state_file" directive is not allowed here/],
        ['relay_guard_state_file interval 0s', http => 'relay_guard_state_file /tmp/rg-state.json 0s;', qr/relay_guard_state_file.*(1s|interval)/],
        ['relay_guard_state_file interval 2d', http => 'relay_guard_state_file /tmp/rg-state.json 2d;', qr/relay_guard_state_file.*(1d|interval)/],
        ['relay_guard_state_file interval soon', http => 'relay_guard_state_file /tmp/rg-state.json soon;', qr/"soon"|interval|time/],
        ['relay_guard_state_file three arguments', http => 'relay_guard_state_file /tmp/a 10s 20s;', qr/invalid number of arguments in "relay_guard_state_file"/],
        ['relay_guard_state_file twice', http => "relay_guard_state_file /tmp/a;\nrelay_guard_state_file /tmp/b;", qr/"relay_guard_state_file" directive is duplicate/],
        ['relay_guard_usage with an argument', location => 'relay_guard_usage on;', qr/invalid number of arguments in "relay_guard_usage"/],
        ['relay_guard_usage in http{}', http => 'relay_guard_usage;', qr/"relay_guard_usage" directive is not allowed here/],
    );
    for my $c (@cases) {
        my ($name, $where, $text, $re) = @$c;
        my ($ok, $out) = nginx_t(prefix($where => $text));
        ok(!$ok, "$name: nginx -t fails");
        unlike($out, qr/unknown directive/, "$name: the directive exists");
        like($out, qr/\[emerg\].*$re.*nginx\.conf:\d+/, "$name: the [emerg] says why, with file and line") or diag($out);
    }
    my ($ok, $out) = nginx_t(prefix(http => "relay_guard_state_file /tmp/rg-state-ok.json 1d;\nrelay_guard_limits off;",
                                    location => 'relay_guard_limits on;'));
    ok($ok, 'relay_guard_state_file with 1d, relay_guard_limits at two levels: accepted') or diag($out);
};

# --- at run time -------------------------------------------------------------------------------

my $dir = tempdir('rg-limits-bad-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $state = "$dir/state.json";
my @hostile_keys = qw(k-zero k-neg k-big k-str k-obj k-float k-huge);
sub write_run_keys {
    my (%extra) = @_;
    RG::Limits::write_keys("$dir/keys.json", keys => [
        alice => { tokens => { budget => 1000, per => '1d' }, %extra },
        map { $_ => { tokens => { budget => 1000, per => '1d' } } } @hostile_keys,
    ]);
}
write_run_keys();
my $srv = RG::Server->new(name => 'limits-bad', workers => 2);
$srv->start(RG::Limits::http_conf(keys => "$dir/keys.json", state => "$state 1d"));
RG::Limits::workers($srv, 2);

sub used_1d {
    my ($key) = @_;
    my $u = RG::Limits::usage_quiet($srv, $key) or return undef;
    my ($w) = grep { ref $_ eq 'HASH' && ($_->{per} // '') eq '1d' } @{ $u->{tokens} || [] };
    return $w;
}

# Restarts nginx on $text as the state file; returns the error log it wrote meanwhile.
sub start_on {
    my ($text) = @_;
    RG::Limits::stop_with($srv, 'QUIT');
    RG::Limits::spew($state, $text);
    my $from = length $srv->error_log;
    my $t0 = time;
    my $ok = eval { RG::Limits::restart($srv); 1 };
    ok($ok, 'nginx starts') or diag($@);
    cmp_ok(time - $t0, '<', 10, sprintf('... in %.1f s', time - $t0));
    return (substr($srv->error_log, $from), $from);
}

subtest 'hostile values in the state file crash nothing and touch no other key' => sub {
    my $day = floor(time / 86400);
    my $text = '{"format":"relay-guard-limits-state","version":1,"saved_at":' . int(time) . ',"keys":{'
        . qq("alice":[{"per_s":86400,"window":$day,"used":7}],)
        . qq("k-zero":[{"per_s":0,"window":0,"used":5}],)
        . qq("k-neg":[{"per_s":-86400,"window":-1,"used":-5}],)
        . qq("k-big":[{"per_s":1e30,"window":18446744073709551616,"used":18446744073709551616}],)
        . qq("k-str":[{"per_s":"86400","window":"$day","used":"300"}],)
        . qq("k-obj":{"per_s":86400,"window":$day,"used":9},)
        . qq("k-float":[{"per_s":86400.5,"window":$day,"used":1.5}],)
        . qq("k-huge":[{"per_s":86400,"window":$day,"used":18446744073709551615}],)
        . qq("k-absent":[{"per_s":86400,"window":$day,"used":11}]}});
    my ($log, $from) = start_on($text);
    my $alice = used_1d('alice');
    ok($alice && ($alice->{used} == 7 || ($alice->{used} == 0 && $log =~ /starting with empty windows/)),
       'alice: her window restored (7), or the whole file refused with the warning')
        or diag(explain($alice));
    for my $k (qw(k-zero k-neg k-big k-str k-obj k-float)) {
        my $w = used_1d($k);
        is($w && $w->{used}, 0, "$k: an invalid entry restores nothing");
        is(RG::Limits::messages($srv, key => $k)->{status}, 200, "$k: admitted");
    }
    my $w = used_1d('k-huge');
    ok($w && ($w->{used} == 0 || $w->{remaining} == 0), 'k-huge: 2^64-1 used either refused or kept, remaining never below 0')
        or diag(explain($w));
    my $r = RG::Limits::messages($srv, key => 'k-huge');
    ok($r->{status} == 200 || $r->{status} == 429, "k-huge: answered ($r->{status})");
    is(RG::Limits::messages($srv, key => 'alice')->{status}, 200, 'alice admitted');
    RG::Limits::no_crash($srv, 'hostile values', $from);
};

subtest 'a deeply nested, a huge and a binary state file' => sub {
    for my $c (['100000 nested arrays', '[' x 100000],
               ['a 4 MB key name', '{"format":"relay-guard-limits-state","version":1,"saved_at":1,"keys":{"'
                                   . ('k' x (4 << 20)) . '":[{"per_s":86400,"window":1,"used":1}]}}'],
               ['random bytes', join('', map { chr(($_ * 131 + 7) % 256) } 1 .. 65536)]) {
        my ($name, $text) = @$c;
        my ($log, $from) = start_on($text);
        like($log, qr/\[warn\][^\n]*starting with empty windows/, "$name: the warning") if $name ne 'a 4 MB key name';
        is(RG::Limits::messages($srv, key => 'alice')->{status}, 200, "$name: alice admitted");
        RG::Limits::no_crash($srv, $name, $from);
    }
};

subtest 'a bad keys file on reload: the master keeps the old configuration and its counters' => sub {
    RG::Limits::stop_with($srv, 'QUIT');
    unlink $state;
    RG::Limits::restart($srv);
    my $workers = RG::Limits::workers($srv, 2);
    is(RG::Limits::messages($srv, key => 'alice', usage => '{"input_tokens":7,"output_tokens":0}')->{status}, 200, 'alice: 7 tokens');
    ok(RG::Limits::wait_until(sub { my $w = used_1d('alice'); $w && $w->{used} == 7 }, 3), 'alice used 7');
    my $master = $srv->master_pid;
    for my $c (['rpm -1', sub { write_run_keys(requests_per_minute => -1) }],
               ['per 9y', sub { write_run_keys(tokens => { budget => 1000, per => '9y' }) }],
               ['not JSON', sub { RG::Limits::spew("$dir/keys.json", '{"keys":[{"id":"alice","limits":{') }]) {
        my ($name, $write) = @$c;
        $write->();
        my $from = length $srv->error_log;
        kill 'HUP', $master;
        ok(RG::Limits::wait_until(sub { substr($srv->error_log, $from) =~ /\[emerg\]/ }, 5), "$name: reload refused with an [emerg]");
        sleep 0.3;
        ok(RG::Server::alive($master), "$name: the master still runs");
        is_deeply(RG::Limits::workers($srv, 2), $workers, "$name: the same workers serve");
        my $w = used_1d('alice');
        is($w && $w->{used}, 7, "$name: alice's counter unchanged");
        is(RG::Limits::messages($srv, key => 'k-zero')->{status}, 200, "$name: requests answered");
        unlike(substr($srv->error_log, $from), qr/exited on signal|panic|\[alert\]/, "$name: no crash");
    }
    write_run_keys();
    $srv->reload;
    my $w = used_1d('alice');
    is($w && $w->{used}, 7, 'a good keys file again: reloaded, alice still 7');
};

$srv->stop;
done_testing();
