# Bad input everywhere else (issue 15): every directive of the module and every file it reads
# (keys file, upstream key file, state file) against a table of bad inputs: empty, huge,
# binary, NUL and control bytes, wrong types and units, out of range, duplicates, wrong context,
# a symlink to /dev/zero, a FIFO, a directory, an unreadable file, and a file that turns bad
# between `nginx -t` and a reload. Each must give an [emerg] (or, where nginx runs on, a [warn])
# that names the file, the nginx.conf line for directives, and what to do instead; never a
# crash (a signal), a hang (each nginx -t is bounded), a raw control byte echoed into the log,
# or a secret from the file quoted. Cases t/001, t/063 and t/065 already hold are not repeated.
# Plain Test::More: `nginx -t` on prefixes built here, and RG::Server for the runtime cases.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use POSIX qw(mkfifo floor);
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

my @nginx = RG::Server::nginx_cmd();
my @modules = split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
my $port = RG::Server::free_port();
# nginx -t reads every file once; 20 s (60 under valgrind) is far beyond any honest run.
my $limit = $ENV{RG_NGINX_WRAPPER} ? 60 : 20;

# Secrets the files below hold: no message may quote any of them (or a 12-byte slice of one).
my $SECRET = 'alice-secret-VERYSECRET-0123456789';
my $UPKEY = 'sk-ant-api03-BADINPUTtestKEY0123456789abcdefABCDEF-xyzAA';
my $GOOD_KEYS = qq({"keys":[{"id":"alice","secrets":["$SECRET"]},)
    . qq({"id":"team","token_sha256":"${\ sha256_hex('team-token-0123456789')}"}]});

# A prefix with conf/keys.json (good unless keys => TEXT) and an nginx.conf; http, server,
# location: more lines at that level (raw bytes allowed); zone => 0 drops relay_guard_zone;
# keys_line => 0 drops relay_guard_keys (for cases that give their own).
sub prefix {
    my (%o) = @_;
    my $p = tempdir('rg-bad-input-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0755, $p;
    make_path("$p/conf", "$p/logs");
    chmod 0777, "$p/logs";
    RG::Limits::spew("$p/conf/keys.json", $o{keys} // $GOOD_KEYS);
    my $zone = ($o{zone} // 1) ? "    relay_guard_zone rg:1m;\n" : '';
    my $keys = ($o{keys_line} // 1) ? "    relay_guard_keys $p/conf/keys.json;\n" : '';
    RG::Limits::spew("$p/conf/nginx.conf", join('', map { "load_module $_;\n" } @modules)
        . "error_log $p/logs/error.log;\nevents { worker_connections 64; }\n"
        . "http {\n$zone$keys" . ($o{http} // '')
        . "\n    server {\n        listen 127.0.0.1:$port;\n" . ($o{server} // '')
        . "\n        location / {\n            relay_guard token;\n" . ($o{location} // '')
        . "\n            return 204;\n        }\n    }\n}\n");
    return $p;
}

# nginx -t on the prefix, bounded: (exit code, signal, output, seconds). @as: a command prefix
# (setpriv) to run it as another user.
sub nginx_t {
    my ($p, @as) = @_;
    my $t0 = time;
    my $pid = open(my $out, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec('timeout', '-k', '2', $limit, @as, @nginx, '-t', '-p', "$p/", '-c', "$p/conf/nginx.conf")
            or exit 127;
    }
    local $/;
    my $text = <$out> // '';
    close $out;
    my ($code, $sig) = ($? >> 8, $? & 127);
    return ($code, $sig, $text, time - $t0);
}

# The checks every bad input shares. $want: 'emerg' (nginx -t fails) or 'warn' (it passes with
# a warning). %o: re (the message, a regex: it must say what is wrong and what is expected),
# file (a regex naming the file at fault; default: nginx.conf and its line), poison (strings
# that must not appear), as (a command prefix).
sub check_t {
    my ($name, $p, $want, %o) = @_;
    my ($code, $sig, $out, $secs) = nginx_t($p, @{ $o{as} || [] });
    is($sig, 0, "$name: no signal (no crash)");
    isnt($code, 124, "$name: no hang (nginx -t finished within ${limit}s)");
    cmp_ok(length $out, '<', 8192, "$name: the output stays short (nothing huge echoed)");
    my $clean = $out =~ s/\Q$p\E/PREFIX/gr;
    unlike($clean, qr/panic|exited on signal|\[alert\]|\[crit\]/, "$name: no panic or alert");
    if ($want eq 'emerg') {
        isnt($code, 0, "$name: nginx -t fails");
    } else {
        is($code, 0, "$name: nginx -t passes") or diag($clean);
    }
    my ($line) = grep { /\[\Q$want\E\]/ } split /\n/, $out;
    $line //= '';
    ok($line ne '', "$name: an [$want]") or do { diag($clean); return };
    like($line, $o{file} // qr/\Q$p\E\/conf\/nginx\.conf:\d+/, "$name: names the file (and line)") or diag($line);
    like($line, $o{re}, "$name: says what is wrong and what to do") or diag($line) if $o{re};
    my $shown = $line =~ s/\Q$p\E//gr;
    note("$name: " . ($shown =~ s/^.*?\[\Q$want\E\] \d+#\d+: //r));
    unlike($shown, qr/[\x00-\x08\x0b-\x1f\x7f]/, "$name: no raw control byte in the message");
    for my $s ($SECRET, $UPKEY, @{ $o{poison} || [] }) {
        for my $i (0 .. length($s) - 12) {
            my $slice = substr($s, $i, 12);
            if (index($shown, $slice) >= 0) {
                fail("$name: quotes \"$slice\" of a secret or a value it must not show");
                last;
            }
        }
    }
    return $line;
}

my $big = 'a' x (100 * 1024);    # beyond nginx's own token limit
my $long = 'b' x 4000;           # within it: reaches the module
my $ctl = "x\x01\x1b[31my";      # a control byte and a terminal escape
my $bin = "\xff\xfe\x80";        # not UTF-8

# --- directive arguments -------------------------------------------------------------------
# [name, where => text, emerg|warn, regex]. "where" is http, server or location.
my $FLAG = qr/it must be "on" or "off"/;
my $TIME = qr/expected (a time|an interval)/;
my $NAME = qr/invalid name .* expected/;
my $PATH = qr/expected a file name|control byte|UTF-8|not a regular file|cannot read|No such file/;
my @directives = (
    # relay_guard
    ['relay_guard empty', server => 'relay_guard "";', 'emerg', qr/invalid value "" in "relay_guard".*"off", "signature", "token" or "any"/],
    ['relay_guard in upper case', server => 'relay_guard TOKEN;', 'emerg', qr/invalid value "TOKEN".*"token"/],
    ['relay_guard 100 KB', server => "relay_guard $big;", 'emerg', qr/too long parameter/],
    ['relay_guard 4000 bytes', server => "relay_guard $long;", 'emerg', qr/invalid value "b{64}\.\.\.\(4000 bytes\)" in "relay_guard" directive, it must be "off"/],
    ['relay_guard control bytes', server => "relay_guard $ctl;", 'emerg', qr/invalid value "x\\x01\\x1b\[31my"/],
    ['relay_guard not UTF-8', server => "relay_guard $bin;", 'emerg', qr/invalid value "\\xff\\xfe\\x80"/],
    ['relay_guard two arguments', server => 'relay_guard token any;', 'emerg', qr/invalid number of arguments in "relay_guard"/],
    ['relay_guard no argument', server => 'relay_guard;', 'emerg', qr/invalid number of arguments in "relay_guard"/],
    ['relay_guard in events{}', top => 'relay_guard token;', 'emerg', qr/"relay_guard" directive is not allowed here|unknown directive/],
    # relay_guard_zone
    ['zone empty', http => 'relay_guard_zone "";', 'emerg', qr/invalid zone "" in "relay_guard_zone", expected NAME:SIZE/, zone => 0],
    ['zone without a name', http => 'relay_guard_zone :1m;', 'emerg', qr/invalid zone ":1m".*expected NAME:SIZE/, zone => 0],
    ['zone size 0', http => 'relay_guard_zone rg:0;', 'emerg', qr/too small: it needs at least \d+k|invalid zone size/, zone => 0],
    ['zone size beyond u64', http => 'relay_guard_zone rg:99999999999999999999m;', 'emerg', qr/invalid zone size.*expected NAME:SIZE/, zone => 0],
    ['zone size not a size', http => 'relay_guard_zone rg:lots;', 'emerg', qr/invalid zone size.*expected NAME:SIZE/, zone => 0],
    ['zone keys=0', http => 'relay_guard_zone rg:1m keys=0;', 'emerg', qr/invalid parameter "keys=0".*1\.\.1048576/, zone => 0],
    ['zone keys beyond range', http => 'relay_guard_zone rg:1m keys=1048577;', 'emerg', qr/invalid parameter "keys=1048577".*1\.\.1048576/, zone => 0],
    ['zone keys not a number', http => 'relay_guard_zone rg:1m keys=ten;', 'emerg', qr/invalid parameter "keys=ten"/, zone => 0],
    ['zone models=1025', http => 'relay_guard_zone rg:1m models=1025;', 'emerg', qr/invalid parameter "models=1025".*1\.\.1024/, zone => 0],
    ['zone four arguments', http => 'relay_guard_zone rg:1m keys=1 models=1 x;', 'emerg', qr/invalid number of arguments in "relay_guard_zone"/, zone => 0],
    ['zone twice', http => 'relay_guard_zone rg2:1m;', 'emerg', qr/"relay_guard_zone" directive is duplicate: one zone serves the whole http block/],
    ['zone 100 KB name', http => "relay_guard_zone $big:1m;", 'emerg', qr/too long parameter/, zone => 0],
    ['zone name with control bytes', http => "relay_guard_zone $ctl:1m;", 'emerg', qr/invalid zone name "x\\x01\\x1b\[31my" in "relay_guard_zone", expected printable ASCII/, zone => 0],
    ['zone in server{}', server => 'relay_guard_zone rg3:1m;', 'emerg', qr/"relay_guard_zone" directive is not allowed here/],
    # relay_guard_metrics
    ['metrics with an argument', location => 'relay_guard_metrics on;', 'emerg', qr/invalid number of arguments in "relay_guard_metrics"/],
    ['metrics twice', location => "relay_guard_metrics;\nrelay_guard_metrics;", 'emerg', qr/"relay_guard_metrics" directive is duplicate/],
    ['metrics in http{}', http => 'relay_guard_metrics;', 'emerg', qr/"relay_guard_metrics" directive is not allowed here/],
    ['metrics in server{}', server => 'relay_guard_metrics;', 'emerg', qr/"relay_guard_metrics" directive is not allowed here/],
    # relay_guard_keys (the path; the file's contents are below)
    ['keys empty path', http => 'relay_guard_keys "";', 'emerg', qr/invalid value "" in "relay_guard_keys".*expected a file name/, keys_line => 0],
    ['keys 100 KB path', http => "relay_guard_keys /tmp/$big;", 'emerg', qr/too long parameter/, keys_line => 0],
    ['keys 4000-byte path', http => "relay_guard_keys /tmp/$long;", 'emerg', qr/invalid value "\/tmp\/b{59}\.\.\.\(4005 bytes\)" in "relay_guard_keys" directive, expected a file name whose every part .* at most 255 bytes/, keys_line => 0],
    ['keys path with control bytes', http => "relay_guard_keys /tmp/$ctl;", 'emerg', qr/invalid value "\/tmp\/x\\x01\\x1b\[31my" in "relay_guard_keys".*control bytes/, keys_line => 0],
    ['keys path not UTF-8', http => "relay_guard_keys /tmp/$bin;", 'emerg', qr/invalid value "\/tmp\/\\xff\\xfe\\x80".*UTF-8/, keys_line => 0],
    ['keys twice', http => 'relay_guard_keys keys.json;', 'emerg', qr/"relay_guard_keys" directive is duplicate/],
    ['keys two arguments', http => 'relay_guard_keys a.json b.json;', 'emerg', qr/invalid number of arguments in "relay_guard_keys"/, keys_line => 0],
    # relay_guard_clock_skew
    ['clock_skew empty', http => 'relay_guard_clock_skew "";', 'emerg', $TIME],
    ['clock_skew negative', http => 'relay_guard_clock_skew -5s;', 'emerg', qr/invalid value "-5s".*$TIME/],
    ['clock_skew 0', http => 'relay_guard_clock_skew 0s;', 'emerg', qr/invalid value "0s" in "relay_guard_clock_skew".*at least 1s/],
    ['clock_skew with a wrong unit', http => 'relay_guard_clock_skew 30x;', 'emerg', qr/invalid value "30x".*$TIME/],
    ['clock_skew a size', http => 'relay_guard_clock_skew 1m5k;', 'emerg', qr/invalid value "1m5k".*$TIME/],
    ['clock_skew beyond range', http => 'relay_guard_clock_skew 99999999999999999999s;', 'emerg', $TIME],
    ['clock_skew of 100 days', http => 'relay_guard_clock_skew 100d;', 'warn', qr/widens the replay window: the nonce zone must hold every nonce for \d+s/],
    ['clock_skew control bytes', http => "relay_guard_clock_skew 1$ctl;", 'emerg', qr/invalid value "1x\\x01\\x1b\[31my".*$TIME/],
    ['clock_skew twice', location => "relay_guard_clock_skew 1s;\nrelay_guard_clock_skew 2s;", 'emerg', qr/"relay_guard_clock_skew" directive is duplicate/],
    # relay_guard_dry_run
    ['dry_run empty', http => 'relay_guard_dry_run "";', 'emerg', $FLAG],
    ['dry_run 1', http => 'relay_guard_dry_run 1;', 'emerg', qr/invalid value "1".*$FLAG/],
    ['dry_run not UTF-8', http => "relay_guard_dry_run $bin;", 'emerg', qr/"\\xff\\xfe\\x80".*$FLAG/],
    ['dry_run twice', server => "relay_guard_dry_run on;\nrelay_guard_dry_run on;", 'emerg', qr/"relay_guard_dry_run" directive is duplicate/],
    ['dry_run no argument', http => 'relay_guard_dry_run;', 'emerg', qr/invalid number of arguments in "relay_guard_dry_run"/],
    # relay_guard_token_max_ttl
    ['token_max_ttl empty', http => 'relay_guard_token_max_ttl "";', 'emerg', $TIME],
    ['token_max_ttl 0', http => 'relay_guard_token_max_ttl 0s;', 'emerg', qr/invalid value "0s" in "relay_guard_token_max_ttl".*at least 1s/],
    ['token_max_ttl not a time', http => 'relay_guard_token_max_ttl forever;', 'emerg', qr/invalid value "forever".*$TIME/],
    ['token_max_ttl 4000 bytes', http => "relay_guard_token_max_ttl $long;", 'emerg', $TIME],
    ['token_max_ttl twice', http => "relay_guard_token_max_ttl 1h;\nrelay_guard_token_max_ttl 2h;", 'emerg', qr/"relay_guard_token_max_ttl" directive is duplicate/],
    ['token_max_ttl in events{}', top => 'relay_guard_token_max_ttl 1h;', 'emerg', qr/not allowed here|unknown directive/],
    # relay_guard_upstream_key_file (the path; contents below)
    ['upstream_key_file empty path', http => 'relay_guard_upstream_key_file "";', 'emerg', qr/invalid value "" in "relay_guard_upstream_key_file".*expected a file name/],
    ['upstream_key_file path with a NUL', http => "relay_guard_upstream_key_file \"/tmp/k\x00ey\";", 'emerg', qr/control bytes|invalid value/],
    ['upstream_key_file missing', http => 'relay_guard_upstream_key_file /nonexistent/key;', 'emerg', qr/cannot read \/nonexistent\/key: No such file/],
    ['upstream_key_file twice', http => "relay_guard_upstream_key_file /etc/hostname;\nrelay_guard_upstream_key_file /etc/hostname;", 'emerg', qr/"relay_guard_upstream_key_file" directive is duplicate/],
    # relay_guard_redact
    ['redact empty', http => 'relay_guard_redact "";', 'emerg', $FLAG],
    ['redact yes', location => 'relay_guard_redact yes;', 'emerg', qr/invalid value "yes".*$FLAG/],
    ['redact twice', http => "relay_guard_redact on;\nrelay_guard_redact off;", 'emerg', qr/"relay_guard_redact" directive is duplicate/],
    ['redact two arguments', http => 'relay_guard_redact on off;', 'emerg', qr/invalid number of arguments in "relay_guard_redact"/],
    # relay_guard_redact_header, relay_guard_redact_arg
    ['redact_header empty', http => 'relay_guard_redact_header "";', 'emerg', $NAME],
    ['redact_header with a space', http => 'relay_guard_redact_header "x y";', 'emerg', qr/invalid name "x y".*expected/],
    ['redact_header with a colon', http => 'relay_guard_redact_header x-key:;', 'emerg', qr/invalid name "x-key:".*expected/],
    ['redact_header control bytes', http => "relay_guard_redact_header ok $ctl;", 'emerg', qr/invalid name "x\\x01\\x1b\[31my".*expected/],
    ['redact_header not UTF-8', http => "relay_guard_redact_header $bin;", 'emerg', qr/invalid name "\\xff\\xfe\\x80".*expected/],
    ['redact_header no argument', http => 'relay_guard_redact_header;', 'emerg', qr/invalid number of arguments in "relay_guard_redact_header"/],
    ['redact_header 100 KB', http => "relay_guard_redact_header $big;", 'emerg', qr/too long parameter/],
    ['redact_arg empty', location => 'relay_guard_redact_arg "";', 'emerg', $NAME],
    ['redact_arg with =', http => 'relay_guard_redact_arg a=b;', 'emerg', qr/invalid name "a=b".*expected/],
    ['redact_arg with &', http => 'relay_guard_redact_arg "a&b";', 'emerg', qr/invalid name "a&b".*expected/],
    ['redact_arg control bytes', http => "relay_guard_redact_arg $ctl;", 'emerg', qr/invalid name "x\\x01\\x1b\[31my".*expected/],
    ['redact_arg no argument', http => 'relay_guard_redact_arg;', 'emerg', qr/invalid number of arguments in "relay_guard_redact_arg"/],
    # relay_guard_accounting, relay_guard_limits
    ['accounting empty', http => 'relay_guard_accounting "";', 'emerg', $FLAG],
    ['accounting not UTF-8', location => "relay_guard_accounting $bin;", 'emerg', qr/"\\xff\\xfe\\x80".*$FLAG/],
    ['accounting in events{}', top => 'relay_guard_accounting on;', 'emerg', qr/not allowed here|unknown directive/],
    ['limits empty', http => 'relay_guard_limits "";', 'emerg', $FLAG],
    ['limits control bytes', http => "relay_guard_limits $ctl;", 'emerg', qr/"x\\x01\\x1b\[31my".*$FLAG/],
    ['limits no argument', http => 'relay_guard_limits;', 'emerg', qr/invalid number of arguments in "relay_guard_limits"/],
    # relay_guard_usage
    ['usage in server{}', server => 'relay_guard_usage;', 'emerg', qr/"relay_guard_usage" directive is not allowed here/],
    # relay_guard_state_file
    ['state_file empty path', http => 'relay_guard_state_file "";', 'emerg', qr/invalid value "" in "relay_guard_state_file".*expected a file name/],
    ['state_file path with control bytes', http => "relay_guard_state_file /tmp/$ctl;", 'emerg', qr/invalid value "\/tmp\/x\\x01\\x1b\[31my".*control bytes/],
    ['state_file 100 KB path', http => "relay_guard_state_file /tmp/$big;", 'emerg', qr/too long parameter/],
    ['state_file a directory', http => 'relay_guard_state_file /tmp;', 'warn', qr/"relay_guard_state_file": \/tmp is a directory, so the state cannot be saved: give the path of a file/],
    ['state_file in a missing directory', http => 'relay_guard_state_file /nonexistent-rg-dir/state.json;', 'warn',
        qr/"relay_guard_state_file": the directory \/nonexistent-rg-dir does not exist: .*create it/],
    ['state_file interval empty', http => 'relay_guard_state_file /tmp/rg-011.json "";', 'emerg', qr/invalid value "".*interval from 1s to 1d/],
    ['state_file interval negative', http => 'relay_guard_state_file /tmp/rg-011.json -1s;', 'emerg', qr/invalid value "-1s".*interval from 1s to 1d/],
    ['state_file interval 4000 bytes', http => "relay_guard_state_file /tmp/rg-011.json $long;", 'emerg', qr/interval from 1s to 1d/],
    ['state_file no argument', http => 'relay_guard_state_file;', 'emerg', qr/invalid number of arguments in "relay_guard_state_file"/],
    # relay_guard_redis, relay_guard_redis_failure
    ['redis no argument', http => 'relay_guard_redis;', 'emerg', qr/invalid number of arguments in "relay_guard_redis"/],
    ['redis empty upstream', http => 'relay_guard_redis "";', 'emerg', qr/invalid value "" in "relay_guard_redis".*name of an upstream block/],
    ['redis upstream with control bytes', http => "relay_guard_redis $ctl;", 'emerg', qr/invalid value "x\\x01\\x1b\[31my".*name of an upstream block/],
    ['redis twice', http => "relay_guard_redis 127.0.0.1:6390;\nrelay_guard_redis 127.0.0.1:6391;", 'emerg', qr/"relay_guard_redis" directive is duplicate/],
    ['redis in server{}', server => 'relay_guard_redis 127.0.0.1:6390;', 'emerg', qr/"relay_guard_redis" directive is not allowed here/],
    ['redis unknown option', http => 'relay_guard_redis 127.0.0.1:6390 db=2;', 'emerg', qr/invalid value "db=2".*expected prefix=P, password_file=FILE, timeout=T or lease=T/],
    ['redis empty prefix', http => 'relay_guard_redis 127.0.0.1:6390 prefix=;', 'emerg', qr/invalid value "prefix=".*1 to 64 printable characters/],
    ['redis 4000-byte prefix', http => "relay_guard_redis 127.0.0.1:6390 prefix=$long;", 'emerg', qr/prefix= takes 1 to 64 printable characters/],
    ['redis timeout 0', http => 'relay_guard_redis 127.0.0.1:6390 timeout=0;', 'emerg', qr/invalid value "timeout=0".*timeout= takes 1ms to 10s/],
    ['redis timeout 20s', http => 'relay_guard_redis 127.0.0.1:6390 timeout=20s;', 'emerg', qr/timeout= takes 1ms to 10s/],
    ['redis timeout not a time', http => 'relay_guard_redis 127.0.0.1:6390 timeout=fast;', 'emerg', qr/timeout= takes 1ms to 10s/],
    ['redis lease 0', http => 'relay_guard_redis 127.0.0.1:6390 lease=0;', 'emerg', qr/invalid value "lease=0".*lease= takes 1s to 1h/],
    ['redis lease 500ms', http => 'relay_guard_redis 127.0.0.1:6390 lease=500ms;', 'emerg', qr/lease= takes 1s to 1h/],
    ['redis lease 2h', http => 'relay_guard_redis 127.0.0.1:6390 lease=2h;', 'emerg', qr/lease= takes 1s to 1h/],
    ['redis lease not a time', http => "relay_guard_redis 127.0.0.1:6390 lease=$ctl;", 'emerg', qr/lease= takes 1s to 1h/],
    ['redis password_file missing', http => 'relay_guard_redis 127.0.0.1:6390 password_file=/nonexistent-rg/pass;', 'emerg',
        qr/cannot read password_file "\/nonexistent-rg\/pass": .*No such file/],
    ['redis_failure bogus', location => 'relay_guard_redis_failure open;', 'emerg', qr/invalid value "open" in "relay_guard_redis_failure".*"closed" or "local"/],
    ['redis_failure twice', location => "relay_guard_redis_failure local;\nrelay_guard_redis_failure closed;", 'emerg', qr/"relay_guard_redis_failure" directive is duplicate/],
);

subtest 'every directive refuses bad arguments with file, line and the fix' => sub {
    for my $c (@directives) {
        my ($name, $where, $text, $want, $re, %o) = @$c;
        my $p;
        if ($where eq 'top') {
            # At the top of the file, outside http{}: in the main context.
            $p = prefix(%o);
            my $conf = RG::Limits::slurp("$p/conf/nginx.conf");
            $conf =~ s/^events \{/$text\nevents {/m or die 'no events block';
            RG::Limits::spew("$p/conf/nginx.conf", $conf);
        } else {
            $p = prefix($where => $text, %o);
        }
        check_t($name, $p, $want, re => $re);
    }
};

subtest 'a NUL byte and a lone CR in nginx.conf' => sub {
    check_t('a NUL byte in a relay_guard argument', prefix(server => "relay_guard tok\x00en;"), 'emerg',
            re => qr/invalid value "tok\\x00en" in "relay_guard"/);
    check_t('a CR inside a redact_header name', prefix(http => "relay_guard_redact_header \"a\rb\";"), 'emerg',
            re => qr/invalid name "a\\x0db".*expected/);
};

# --- the files the module reads --------------------------------------------------------------

# A prefix whose conf/FILE is set up by $make->($path) and read through $line ("PATH" in it
# replaced); keys_line 0 when FILE is the keys file itself.
sub file_prefix {
    my ($line, $make, %o) = @_;
    my $p = prefix(http => '', %o);
    my $path = "$p/conf/under-test";
    $make->($path);
    my $conf = RG::Limits::slurp("$p/conf/nginx.conf");
    my $l = $line =~ s/PATH/$path/r;
    $conf =~ s/^http \{\n/http {\n    $l\n/m or die 'no http block';
    RG::Limits::spew("$p/conf/nginx.conf", $conf);
    return ($p, $path);
}

# The unreadable-file cases run nginx -t as nobody (root reads any file); not under valgrind,
# whose log files (root's, in target/valgrind/) nobody cannot write.
my $nobody = getpwnam('nobody') && !$ENV{RG_NGINX_WRAPPER} ? 'nobody' : undef;
# Makers shared by the three files: the special files every reader must refuse without
# blocking or reading forever.
my %special = (
    'a symlink to /dev/zero' => [sub { symlink '/dev/zero', $_[0] or die $! }, qr/not a regular file/],
    'a FIFO'                 => [sub { mkfifo($_[0], 0600) or die $! }, qr/not a regular file/],
    'a directory'            => [sub { mkdir $_[0] or die $! }, qr/not a regular file/],
    'a symlink loop'         => [sub { symlink $_[0], $_[0] or die $! }, qr/Too many levels of symbolic links/],
    'a dangling symlink'     => [sub { symlink "$_[0].gone", $_[0] or die $! }, qr/No such file/],
    'a path through a file'  => [sub { RG::Limits::spew($_[0], 'x') }, qr/Not a directory/, '/sub'],
);
sub spewer { my ($text) = @_; sub { RG::Limits::spew($_[0], $text) } }
sub sparse { my ($size) = @_; sub { open my $f, '>', $_[0] or die $!; truncate $f, $size or die $!; close $f } }

subtest 'the keys file' => sub {
    my $line = 'relay_guard_keys PATH;';
    my $F = sub { my ($p, $path) = @_; qr/"relay_guard_keys":.*\Q$path\E.* in \Q$p\E\/conf\/nginx\.conf:\d+/ };
    my @cases = (
        ['empty', spewer(''), qr/invalid JSON at line 1 column 0.*expected \{"keys"/],
        ['only whitespace', spewer("\n\n  \n"), qr/invalid JSON at line \d+ column \d+.*expected \{"keys"/],
        ['over 16 MB', sparse((16 << 20) + 1), qr/larger than 16777216 bytes/],
        ['binary', spewer(join '', map { chr(($_ * 37 + 11) % 256) } 1 .. 4096), qr/(invalid JSON|not a number) .*line \d+ column \d+/],
        ['a UTF-8 BOM', spewer("\xef\xbb\xbf$GOOD_KEYS"), qr/starts with a UTF-8 byte order mark \(bytes EF BB BF\).*save it as UTF-8 without a BOM \(line 1 column 1\)/],
        ['a NUL inside a secret string', spewer(qq({"keys":[{"id":"a","secrets":["$SECRET\x00x"]}]})),
            qr/invalid JSON at line 1 column \d+|control character/],
        ['keys a string', spewer(qq({"keys":"$SECRET"})), qr/"keys" must be an array of key objects, not a string/],
        ['a key a string', spewer(qq({"keys":["$SECRET"]})), qr/key #1.*must be.*object|expected/],
        ['secrets a number', spewer('{"keys":[{"id":"a","secrets":[1234567890123456789]}]}'), qr/"secrets" #1 must be a string, not a number/],
        ['id a number', spewer(qq({"keys":[{"id":7,"secrets":["$SECRET"]}]})), qr/key #1: "id" must be a string, not a number/],
        ['id an object', spewer(qq({"keys":[{"id":{"x":1},"secrets":["$SECRET"]}]})), qr/key #1: "id" must be a string/],
        ['id with a NUL', spewer(qq({"keys":[{"id":"a\\u0000b","secrets":["$SECRET"]}]})), qr/"id" must be 1-64 characters of A-Z a-z 0-9/],
        ['id of 65 characters', spewer(qq({"keys":[{"id":"${\ ('i' x 65)}","secrets":["$SECRET"]}]})), qr/"id" must be 1-64 characters/],
        ['duplicate ids', spewer(qq({"keys":[{"id":"a","secrets":["$SECRET"]},{"id":"a","secrets":["${SECRET}x"]}]})),
            qr/key #2: id "a": is listed twice/],
        ['the same token under two ids', spewer(qq({"keys":[{"id":"a","token_sha256":"${\ sha256_hex($SECRET)}"},{"id":"b","token_sha256":"${\ sha256_hex($SECRET)}"}]})),
            qr/key #2: id "b".*token/],
        ['a secret as a field name', spewer(qq({"keys":[{"id":"a","$SECRET":1}]})), qr/unknown field/],
        ['the positional form', spewer(qq({"keys":[["a",["$SECRET"]]]})), qr/key #1.*object/],
        ['a second document', spewer("$GOOD_KEYS$GOOD_KEYS"), qr/trailing characters/],
        ['100000 nested arrays', spewer('[' x 100000), qr/must be one JSON object .*not an array|invalid JSON|recursion limit/],
    );
    for my $c (@cases) {
        my ($name, $make, $re) = @$c;
        my ($p, $path) = file_prefix($line, $make, keys_line => 0);
        check_t("keys file $name", $p, 'emerg', re => $re, file => $F->($p, $path));
    }
    for my $name (sort keys %special) {
        my ($make, $re, $suffix) = @{ $special{$name} };
        my ($p, $path) = file_prefix($suffix ? "relay_guard_keys PATH$suffix;" : $line, $make, keys_line => 0);
        check_t("keys file $name", $p, 'emerg', re => $re, file => $F->($p, $path));
    }
    SKIP: {
        skip 'no user nobody (or under valgrind) to be refused by the file mode', 1 unless $nobody && $> == 0;
        # root reads any file: nginx -t as nobody (the prefix and its logs are open to it).
        my ($p, $path) = file_prefix($line, spewer($GOOD_KEYS), keys_line => 0);
        chmod 0600, $path;
        check_t('keys file unreadable (mode 0600, nginx -t as nobody)', $p, 'emerg',
                re => qr/cannot read .*Permission denied/, file => $F->($p, $path),
                as => ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']);
    }
};

subtest 'the upstream key file' => sub {
    my $line = 'relay_guard_upstream_key_file PATH;';
    my $F = sub { my ($p, $path) = @_; qr/"relay_guard_upstream_key_file":.*\Q$path\E.* in \Q$p\E\/conf\/nginx\.conf:\d+/ };
    my @cases = (
        ['empty', spewer(''), qr/is empty: it must hold the upstream API key on its first line/],
        ['only newlines', spewer("\n\n\n"), qr/is empty: it must hold the upstream API key/],
        ['over 64 KB', sparse((64 << 10) + 1), qr/larger than 65536 bytes/],
        ['binary', spewer("\x00\x01$UPKEY\xff"), qr/one line of printable ASCII.*byte 1 .*not shown: it is part of the key/],
        ['a NUL in the key', spewer(substr($UPKEY, 0, 20) . "\x00" . substr($UPKEY, 20) . "\n"),
            qr/one line of printable ASCII.*byte 21 .*not shown/],
        ['a space in the key', spewer(substr($UPKEY, 0, 20) . ' ' . substr($UPKEY, 20) . "\n"), qr/printable ASCII \(no spaces/],
        ['a UTF-8 BOM', spewer("\xef\xbb\xbf$UPKEY\n"), qr/printable ASCII.*byte 1 /],
        ['a JSON document instead of the key', spewer(qq({"api_key": "$UPKEY"}\n)), qr/printable ASCII.*byte \d+ /],
    );
    for my $c (@cases) {
        my ($name, $make, $re) = @$c;
        my ($p, $path) = file_prefix($line, sub { $make->($_[0]); chmod 0600, $_[0] });
        check_t("upstream key file $name", $p, 'emerg', re => $re, file => $F->($p, $path));
    }
    my ($p, $path) = file_prefix($line, spewer("$UPKEY\n"));
    chmod 0644, $path;
    check_t('upstream key file readable by every user', $p, 'warn', re => qr/readable by every user \(mode 644\): chmod 600 it/,
            file => $F->($p, $path));
    for my $name (sort keys %special) {
        my ($make, $re, $suffix) = @{ $special{$name} };
        my ($p, $path) = file_prefix($suffix ? "relay_guard_upstream_key_file PATH$suffix;" : $line, $make);
        check_t("upstream key file $name", $p, 'emerg', re => $re, file => $F->($p, $path));
    }
    SKIP: {
        skip 'no user nobody (or under valgrind) to be refused by the file mode', 1 unless $nobody && $> == 0;
        my ($p, $path) = file_prefix($line, spewer("$UPKEY\n"));
        chmod 0600, $path;
        chmod 0644, "$p/conf/keys.json";
        check_t('upstream key file unreadable (mode 0600, nginx -t as nobody)', $p, 'emerg',
                re => qr/cannot read .*Permission denied/, file => $F->($p, $path),
                as => ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']);
    }
};

# --- at run time -------------------------------------------------------------------------------

my $dir = tempdir('rg-bad-input-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $keys = "$dir/keys.json";
my $upkey = "$dir/upstream-key";
my $state = "$dir/state.json";
RG::Limits::spew($keys, $GOOD_KEYS);
RG::Limits::spew($upkey, "$UPKEY\n");
chmod 0600, $upkey;
my $mock = $ENV{TEST_NGINX_MOCK_PORT};
my $srv = RG::Server->new(name => 'bad-input', workers => 2);
my $conf = <<"EOC";
    relay_guard_zone rg:1m;
    relay_guard_keys $keys;
    relay_guard_upstream_key_file $upkey;
    relay_guard_state_file $state 1d;
    server {
        listen 127.0.0.1:PORT;
        location / {
            relay_guard token;
            add_header X-RG-Status \$relay_guard_status always;
            return 204;
        }
    }
EOC
$srv->start($conf);
RG::Limits::workers($srv, 2);

sub as_team { $srv->request('GET', '/v1/models', "x-api-key: team-token-0123456789\n") }

# Replaces the file at $path by $make's, sends HUP, and checks that the reload is refused with
# an [emerg] naming the file and the fix, while the old configuration keeps serving.
sub bad_reload {
    my ($name, $path, $make, $re) = @_;
    my $master = $srv->master_pid;
    my $workers = RG::Limits::workers($srv, 2);
    my $saved = "$path.good";
    rename $path, $saved or die "$path: $!";
    $make->($path);
    my $from = length $srv->error_log;
    kill 'HUP', $master;
    ok(RG::Limits::wait_until(sub { substr($srv->error_log, $from) =~ /\[emerg\]/ }, 10), "$name: the reload is refused with an [emerg]");
    my $log = substr($srv->error_log, $from);
    my ($line) = grep { /\[emerg\]/ } split /\n/, $log;
    $line //= '';
    like($line, qr/\Q$path\E/, "$name: the [emerg] names the file");
    like($line, $re, "$name: and says why") or diag($line);
    like($line, qr/nginx\.conf:\d+/, "$name: and the nginx.conf line");
    for my $s ($SECRET, $UPKEY) {
        ok(!grep({ index($log, substr($s, $_, 12)) >= 0 } 0 .. length($s) - 12), "$name: no slice of a secret in the error log");
    }
    sleep 0.3;
    ok(RG::Server::alive($master), "$name: the master still runs");
    is_deeply(RG::Limits::workers($srv, 2), $workers, "$name: the same workers serve");
    my $r = as_team();
    is($r->{status}, 204, "$name: a request with the old keys is still answered") or diag(explain($r));
    RG::Limits::no_crash($srv, $name, $from, qr/\[emerg\]/);
    system('rm', '-rf', $path);
    rename $saved, $path or die "$saved: $!";
}

subtest 'files that turn bad between nginx -t and a reload: the old configuration serves' => sub {
    is(as_team()->{status}, 204, 'the good configuration serves');
    my ($code, undef, $out) = do {
        my $root = $srv->root;
        my $t0 = time;
        my $o = `@nginx -t -p $root/ -c $root/conf/nginx.conf 2>&1`;
        ($? >> 8, 0, $o);
    };
    is($code, 0, 'nginx -t passes on the files as they were') or diag($out);
    for my $c (['keys file turned binary', $keys, spewer("\x00\xff" x 512), qr/invalid JSON/],
               ['keys file emptied', $keys, spewer(''), qr/invalid JSON at line 1 column 0/],
               ['keys file with a duplicate id', $keys,
                   spewer(qq({"keys":[{"id":"a","secrets":["$SECRET"]},{"id":"a","secrets":["${SECRET}x"]}]})), qr/listed twice/],
               ['keys file with a secret where the id goes', $keys, spewer(qq({"keys":[{"id":"$SECRET!","secrets":["$SECRET"]}]})),
                   qr/"id" must be 1-64 characters/],
               ['keys file now a symlink to /dev/zero', $keys, $special{'a symlink to /dev/zero'}[0], qr/not a regular file/],
               ['keys file now a FIFO', $keys, $special{'a FIFO'}[0], qr/not a regular file/],
               ['keys file now a directory', $keys, $special{'a directory'}[0], qr/not a regular file/],
               ['keys file removed', $keys, sub { }, qr/No such file/],
               ['upstream key file emptied', $upkey, spewer(''), qr/is empty: it must hold the upstream API key/],
               ['upstream key file with a control byte', $upkey, spewer("$UPKEY\x07\n"), qr/printable ASCII.*not shown/],
               ['upstream key file now a FIFO', $upkey, $special{'a FIFO'}[0], qr/not a regular file/],
               ['upstream key file now a symlink to /dev/zero', $upkey, $special{'a symlink to /dev/zero'}[0], qr/not a regular file/]) {
        bad_reload(@$c);
    }
    $srv->reload;
    is(as_team()->{status}, 204, 'the good files again: reloaded, serving');
};

subtest 'state files nobody wrote: a warning naming the file, nginx starts with empty windows' => sub {
    # t/063 and t/065 hold not-JSON, empty, another format, version 2, truncated, an array, a
    # directory, hostile values, deep nesting, a huge key name and random bytes.
    my $doc = sub { '{"format":"relay-guard-limits-state","version":1,"saved_at":' . int(time) . ',"keys":' . $_[0] . '}' };
    my $day = floor(time / 86400);
    my @cases = (
        ['a symlink to /dev/zero', $special{'a symlink to /dev/zero'}[0], qr/not a regular file/],
        ['a FIFO', $special{'a FIFO'}[0], qr/not a regular file/],
        ['a symlink loop', $special{'a symlink loop'}[0], qr/Too many levels of symbolic links/],
        ['over 64 MB', sparse((64 << 20) + 1), qr/larger than 67108864 bytes/],
        ['keys an array', spewer($doc->('[]')), qr/keys|invalid|expected/],
        ['a key listed twice', spewer($doc->(qq({"alice":[{"per_s":86400,"window":$day,"used":1}],"alice":[{"per_s":86400,"window":$day,"used":2}]}))),
            qr/key "alice" appears twice/],
        ['a key id that is a secret', spewer($doc->(qq({"$SECRET!":[{"per_s":86400,"window":$day,"used":1}]}))), qr/a key id is not .*not shown/],
        ['binary', spewer(join '', map { chr(($_ * 73 + 5) % 256) } 1 .. 8192), qr/invalid|JSON|expected/],
    );
    for my $c (@cases) {
        my ($name, $make, $re) = @$c;
        RG::Limits::stop_with($srv, 'QUIT');
        system('rm', '-rf', $state);
        $make->($state);
        my $from = length $srv->error_log;
        my $t0 = time;
        my $ok = eval { RG::Limits::restart($srv); 1 };
        ok($ok, "state file $name: nginx starts") or do { diag($@); next };
        cmp_ok(time - $t0, '<', 10, "state file $name: promptly");
        my $log = substr($srv->error_log, $from);
        my ($line) = grep { /\[warn\].*\Q$state\E/ } split /\n/, $log;
        $line //= '';
        ok($line ne '', "state file $name: a [warn] naming the file") or diag($log);
        like($line, qr/starting with empty windows/, "state file $name: ... saying what nginx does");
        like($line, $re, "state file $name: ... and why") or diag($line);
        for my $s ($SECRET) {
            ok(!grep({ index($line, substr($s, $_, 12)) >= 0 } 0 .. length($s) - 12), "state file $name: no slice of a secret");
        }
        is(as_team()->{status}, 204, "state file $name: requests answered");
        RG::Limits::no_crash($srv, "state file $name", $from);
    }
    # The master replaces the state file at exit: leave a plain file for the next run.
    system('rm', '-rf', $state);
};

$srv->stop;
done_testing();
