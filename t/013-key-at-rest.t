# The upstream key encrypted at rest (issue 16): scripts/rg-seal-key seals a fresh random key
# with `systemd-creds encrypt` (host key), the .cred is decrypted as systemd's
# LoadCredentialEncrypted= would (`systemd-creds decrypt` under the credential's name into a
# private 0400 file), nginx loads that file through relay_guard_upstream_key_file and the key
# reaches the mock upstream; a rotation re-seals and a HUP reload sends the new key. Around it:
# the key never in any argv, in the helper's output, in the .cred, in the error or access log
# (accepted, rejected and 502 requests); the .cred useless without the host key, under another
# name or altered; the permission warnings; the helper's errors; `systemd-analyze verify` of
# nginx.service with the shipped drop-in (and a broken one, so the check can fail).
# The host key is a private one: systemd-creds takes its path from SYSTEMD_CREDENTIAL_SECRET,
# so the machine's /var/lib/systemd/credential.secret is neither read nor created.
# Test::Nginx::Socket cannot reload mid-file, so this file uses t/lib/RG/Server.pm.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use File::Path qw(make_path);
use Digest::SHA qw(sha256_hex);
use MIME::Base64 qw(encode_base64);
use RG;
use RG::Server;
use RG::Redact ();

my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
# The first PATH entry holding an executable NAME, or undef.
sub find_bin {
    my ($n) = @_;
    for my $d (split /:/, $ENV{PATH} // '') { return "$d/$n" if $d ne '' && -x "$d/$n" }
    return undef;
}
my $creds = find_bin('systemd-creds');
$creds or plan skip_all => 'systemd-creds is not installed';
my $data = $ENV{TEST_NGINX_DATA_DIR} // "$ENV{PWD}/t/data";
my $seal = "$ENV{PWD}/scripts/rg-seal-key";
my $dropin = "$ENV{PWD}/scripts/deb/systemd/relay-guard-key.conf";

my $dir = File::Temp::tempdir('rg-keyrest-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0700, $dir;
$ENV{SYSTEMD_CREDENTIAL_SECRET} = "$dir/host/credential.secret";
delete $ENV{CREDENTIALS_DIRECTORY};

# systemd-creds through a shim that records every argv it is given, to show that the key is in
# none of them.
my $argv_log = "$dir/argv.log";
make_path("$dir/shim");
open my $sh, '>', "$dir/shim/systemd-creds" or die $!;
print $sh "#!/bin/sh\nprintf '%s\\n' \"\$*\" >>'$argv_log'\nexec '$creds' \"\$@\"\n";
close $sh;
chmod 0755, "$dir/shim/systemd-creds";
local $ENV{PATH} = "$dir/shim:$ENV{PATH}";

# A fresh key per run: nothing below can pass by matching a constant.
sub new_key { my $r = sha256_hex(rand() . time() . $$ . $_[0]); "sk-ant-api03-rest$_[0]-$r-AA" }
my $key1 = new_key(1);
my $key2 = new_key(2);

sub slurp { my ($f) = @_; open my $h, '<', $f or return ''; local $/; my $t = <$h>; $t // '' }

# Runs the helper with $stdin on standard input; returns (exit status, stdout+stderr).
sub run_seal {
    my ($stdin, @args) = @_;
    my $in = "$dir/stdin";
    open my $f, '>', $in or die $!;
    print $f $stdin;
    close $f;
    my $q = join ' ', map { "'$_'" } $seal, @args;
    my $out = `$q <'$in' 2>&1`;
    my $rc = $? >> 8;
    unlink $in;
    return ($rc, $out);
}

# Every 12-byte slice of the key's random part, so a partial or cut copy is found too.
sub leaks {
    my ($text, @keys) = @_;
    for my $k (@keys) {
        for my $w (RG::Redact::windows($k)) { return $w if index($text, $w) >= 0 }
    }
    return undef;
}

my $cred = "$dir/etc/relay-guard/anthropic-key.cred";
my $run = "$dir/run/credentials/nginx.service";
my $plain = "$run/anthropic-key";

# As systemd does at service start: decrypt under the credential's id into a directory only
# root can enter, the file 0400. Returns (success, what systemd-creds said).
sub systemd_decrypt {
    my ($name) = @_;
    make_path($run);
    chmod 0700, $run;
    unlink $plain;
    my $rc = system('sh', '-c', 'umask 0277 && exec "$0" decrypt --name="$1" "$2" "$3" 2>"$4"',
                    $creds, $name // 'anthropic-key', $cred, $plain, "$dir/decrypt.err");
    return ($rc == 0, slurp("$dir/decrypt.err"));
}

subtest 'rg-seal-key seals the key; it is in no argv, output or ciphertext' => sub {
    my ($rc, $out) = run_seal("$key1\n", '--output', $cred);
    is($rc, 0, 'sealed from standard input') or diag $out;
    ok(-f $cred, 'the .cred exists');
    is((stat $cred)[2] & 07777, 0600, 'the .cred is 0600');
    like($out, qr{relay_guard_upstream_key_file /run/credentials/nginx\.service/anthropic-key;},
         'the helper prints the directive to use');
    my $ct = slurp($cred);
    ok(length $ct > 100, 'the .cred holds ciphertext (' . length($ct) . ' bytes)');
    my $argv = slurp($argv_log);
    like($argv, qr/^encrypt --name=anthropic-key --with-key=host - /m, 'systemd-creds encrypt, host key, key on stdin');
    like($argv, qr/^decrypt --name=anthropic-key /m, 'the helper decrypted it once to check');
    for ([argv => $argv], [output => $out], [ciphertext => $ct]) {
        my $hit = leaks($_->[1], $key1);
        ok(!defined $hit, "no part of the key in the $_->[0]") or diag "found: $hit";
    }
    # The .cred is base64: a key stored in the clear would show as base64 at one of three
    # alignments.
    my @b64 = map { substr(encode_base64(substr($key1, $_), ''), 8, 24) } 0 .. 2;
    ok(!grep({ index($ct, $_) >= 0 } @b64), 'nor its base64, at any alignment, in the .cred');
    my ($rc2, $out2) = run_seal("$key1\n", '--output', $cred);
    isnt($rc2, 0, 'an existing .cred is not replaced without --force');
    like($out2, qr/exists: pass --force/, '... and the error says how');
};

subtest 'the .cred decrypts only as systemd would: same name, same host key, unaltered' => sub {
    my ($ok, $err) = systemd_decrypt('other-name');
    ok(!$ok, 'another credential id is refused (systemd checks the embedded name)');
    like($err, qr/Embedded credential name 'anthropic-key' does not match/, '... for that reason');
    {
        local $ENV{SYSTEMD_CREDENTIAL_SECRET} = "$dir/other-host/credential.secret";
        make_path("$dir/other-host");
        # Another machine's host key, made the way systemd makes one: the .cred must not open.
        is(system("'$creds' setup >/dev/null 2>&1"), 0, 'another host key made (systemd-creds setup)');
        ($ok, $err) = systemd_decrypt();
        ok(!$ok, 'another host key cannot open it (a copied .cred alone is useless)');
        like($err, qr/Decryption failed \(incorrect key\?\)/, '... decryption fails');
    }
    my $ct = slurp($cred);
    my $bad = $ct;
    substr($bad, 60, 1) = substr($bad, 60, 1) eq 'A' ? 'B' : 'A';
    my $saved = "$cred.orig";
    rename $cred, $saved or die $!;
    open my $f, '>', $cred or die $!;
    print $f $bad;
    close $f;
    ($ok, $err) = systemd_decrypt();
    ok(!$ok, 'an altered .cred is refused') or diag $err;
    rename $saved, $cred or die $!;
    ($ok, $err) = systemd_decrypt();
    ok($ok, 'the .cred decrypts under anthropic-key with the host key') or diag $err;
    is(slurp($plain), "$key1\n", 'into the key as sealed, one line');
    is((stat $plain)[2] & 07777, 0400, 'the decrypted file is 0400, as systemd makes it');
};

my $http = <<"EOC";
    relay_guard_zone rg:1m;
    relay_guard_keys $data/keys.json;
    relay_guard_upstream_key_file $plain;
    relay_guard_redact on;
    log_format keyrest 'st=\$status rg=\$relay_guard_status k=\$relay_guard_upstream_key x=\$http_x_api_key a=\$http_authorization';
    server {
        listen 127.0.0.1:PORT;
        access_log ROOT/logs/access.log keyrest;
        location / {
            relay_guard any;
            add_header X-RG-Status \$relay_guard_status always;
            proxy_set_header x-api-key \$relay_guard_upstream_key;
            proxy_set_header Authorization "";
            proxy_set_header X-Key-Id "";
            proxy_set_header X-Timestamp "";
            proxy_set_header X-Nonce "";
            proxy_set_header X-Signature "";
            proxy_pass http://127.0.0.1:$mock;
        }
        location /down/ {
            relay_guard token;
            proxy_set_header x-api-key \$relay_guard_upstream_key;
            proxy_pass http://127.0.0.1:1;
        }
    }
EOC

my $srv = RG::Server->new(name => 'keyrest', workers => 1);
(my $conf = $http) =~ s/ROOT/$srv->root/e;
$srv->start($conf);

sub upstream_keys {
    return [map { @{ RG::record_headers($_)->{'x-api-key'} // [] } } @{ RG::mock_record() }];
}

my $body = RG::json_body(200);
sub token_req { $srv->request('POST', '/v1/messages', "Authorization: Bearer $RG::STATIC_TOKEN\n", $body) }
sub signed_req {
    my $h = RG::sign_headers(method => 'POST', target => '/v1/messages', body => $body);
    return $srv->request('POST', '/v1/messages', $h, $body);
}

subtest 'nginx loads the decrypted credential; the key reaches the upstream' => sub {
    RG::mock_reset();
    my $t = token_req();
    is($t->{status}, 200, 'a token request is relayed');
    my $s = signed_req();
    is($s->{status}, 200, 'a signed request is relayed');
    is_deeply(upstream_keys(), [$key1, $key1], 'the mock received the sealed key as x-api-key, each time');
    RG::mock_reset();
    my $r = $srv->request('POST', '/v1/messages', "Authorization: Bearer not-a-known-token-000000\n", $body);
    is($r->{status}, 401, 'a bad token is rejected');
    is_deeply(upstream_keys(), [], '... and nothing reached the upstream');
    my $d = $srv->request('GET', '/down/v1/models', "Authorization: Bearer $RG::STATIC_TOKEN\n");
    is($d->{status}, 502, 'an upstream that refuses the connection: 502 (error-log lines about it)');
    my $err = $srv->error_log;
    unlike($err, qr/\[warn\].*\Q$plain\E/, 'no permission warning for the 0400 credential');
    like($err, qr/connect\(\) failed/, 'the 502 was logged (the log checked below has content)');
};

sub logs_clean {
    my ($what, @keys) = @_;
    my $acc = slurp($srv->root . '/logs/access.log');
    like($acc, qr/k=(?:sk-ant-api03-)?\[redacted:[0-9a-f]{8}\] /, "$what: the access log shows \$relay_guard_upstream_key masked");
    my $hit = leaks($srv->error_log . $acc, @keys);
    ok(!defined $hit, "$what: no 12-byte slice of the key in the error or access log") or diag "found: $hit";
}
logs_clean('accepted, rejected, 502', $key1);

subtest 'rotation: re-seal with --force, decrypt as a restart would, HUP: the new key goes up' => sub {
    my ($rc, $out) = run_seal("$key2\n", '--output', $cred, '--force');
    is($rc, 0, 'the new key is sealed over the old .cred') or diag $out;
    ok((systemd_decrypt())[0], 'and decrypted into the credential path');
    $srv->reload;
    RG::mock_reset();
    is(token_req()->{status}, 200, 'a request after the reload is relayed');
    is_deeply(upstream_keys(), [$key2], 'with the new key (re-read on reload)');
    my $hit = leaks(slurp($argv_log), $key1, $key2);
    ok(!defined $hit, 'neither key in any argv given to systemd-creds') or diag "found: $hit";
};
logs_clean('after the rotation', $key1, $key2);

subtest 'a credential file readable by others is warned about, naming the file and the fix' => sub {
    for my $case ([0644, qr/readable by every user \(mode 644\): chmod 600 it/],
                  [0640, qr/readable by its group \(mode 640\): chmod 600 \(or 400\) it/]) {
        my ($mode, $want) = @$case;
        chmod $mode, $plain;
        $srv->reload;
        like($srv->error_log, qr/\[warn\] .*"relay_guard_upstream_key_file": \Q$plain\E is $want/,
             sprintf('mode %o: warned', $mode));
    }
    chmod 0400, $plain;
    $srv->reload;
    RG::mock_reset();
    is(token_req()->{status}, 200, 'back to 0400: relayed');
    is_deeply(upstream_keys(), [$key2], 'with the same key');
};
logs_clean('after the warnings', $key1, $key2);
$srv->stop;

subtest 'rg-seal-key: help and clear errors, never quoting the key' => sub {
    my ($rc, $out) = run_seal('', '--help');
    is($rc, 0, '--help exits 0');
    like($out, qr/^Usage: rg-seal-key /m, '--help prints the usage');
    unlike($out, qr/^#|set \+x/m, '--help shows no code and no comment marks');
    my $o = "$dir/err.cred";
    my $spaced = 'sk-ant-api03-has a-space-' . sha256_hex(rand());
    my @cases = (
        ['', [], qr/the first line is empty/, 'empty input'],
        ["  \n$key1\n", [], qr/the first line is empty/, 'a blank first line'],
        ["$spaced\n", [], qr/byte ${\ (index($spaced, ' ') + 1)} of the first line is not printable ASCII/, 'a key with a space, by position'],
        ["sk-ant-\x01tail-0123456789abcdef\n", [], qr/byte 8 of the first line/, 'a control character'],
        ["$key1\n", ['--key-file', "$dir/none"], qr/--key-file \S+none: not a regular file/, 'a missing key file'],
        ["$key1\n", ['--name', 'a/b'], qr/--name 'a\/b': use 1-64 of/, 'a name with a slash'],
        ["$key1\n", ['--output'], qr/--output needs a value/, 'an option without its value'],
        ["$key1\n", ['--bogus'], qr/unknown option --bogus/, 'an unknown option'],
        ["$key1\n", [$key1], qr/unexpected argument \(not shown: it may be the key\)/, 'the key given as an argument is refused, not echoed'],
    );
    push @cases, ["$key1\n", ['--tpm2'], qr/--tpm2: this machine has no usable TPM2/, '--tpm2 without a TPM']
        if system("$creds has-tpm2 -q >/dev/null 2>&1") != 0;
    for my $c (@cases) {
        my ($in, $args, $want, $name) = @$c;
        my ($rc, $out) = run_seal($in, '--output', $o, @$args);
        isnt($rc, 0, "$name: fails");
        like($out, $want, "$name: says why");
        my $hit = leaks($out, $key1, $spaced);
        ok(!defined $hit, "$name: the key is not in the message") or diag "found: $hit";
        ok(!-e $o, "$name: nothing written");
    }
    my $kf = "$dir/key.txt";
    open my $f, '>', $kf or die $!;
    print $f "  $key2  \r\n# a comment line\n";
    close $f;
    chmod 0600, $kf;
    ($rc, $out) = run_seal('', '--key-file', $kf, '--output', $o, '--name', 'other-key');
    is($rc, 0, '--key-file and --name') or diag $out;
    like($out, qr/only the first one is sealed/, 'the ignored lines are mentioned');
    my $back = `'$creds' decrypt --name=other-key '$o' - 2>/dev/null`;
    is($back, "$key2\n", 'the first line, trimmed, is what was sealed');
    my @left = glob("$dir/.*.cred $dir/etc/relay-guard/.*.cred");
    is_deeply(\@left, [], 'no temporary .cred left behind');
};

subtest 'systemd-analyze verify: nginx.service with the shipped drop-in' => sub {
    my $analyze = find_bin('systemd-analyze');
    my $unit = '/lib/systemd/system/nginx.service';
    plan skip_all => 'systemd-analyze or nginx.service missing' unless $analyze && -f $unit;
    my $verify = sub {
        my ($conf) = @_;
        my $u = File::Temp::tempdir('units-XXXXXX', DIR => $dir);
        make_path("$u/nginx.service.d");
        system('cp', $unit, "$u/nginx.service") == 0 or die;
        open my $f, '>', "$u/nginx.service.d/relay-guard-key.conf" or die $!;
        print $f $conf;
        close $f;
        # Not booted with systemd here: verify reads the unit files from SYSTEMD_UNIT_PATH
        # (the trailing colon adds the built-in paths) and needs no manager.
        my $out = `cd '$u' && SYSTEMD_UNIT_PATH='$u:' '$analyze' verify '$u/nginx.service' 2>&1`;
        return ($? >> 8, $out);
    };
    my ($rc, $out) = $verify->(slurp($dropin));
    is($rc, 0, 'verify exits 0') or diag $out;
    unlike($out, qr/relay-guard-key\.conf/, 'and says nothing about the drop-in') or diag $out;
    # The README's cloud KMS drop-in: its syntax only (no cloud CLI runs here).
    my ($kms) = slurp("$ENV{PWD}/README.md") =~ /^```ini\n(# \/etc\/systemd\/system\/nginx\.service\.d\/relay-guard-kms\.conf\n.*?)^```/ms;
    ok($kms, "the README's KMS drop-in found");
    ($rc, $out) = $verify->($kms // '');
    is($rc, 0, 'the KMS drop-in: verify exits 0') or diag $out;
    unlike($out, qr/relay-guard-key\.conf/, '... and says nothing about it') or diag $out;
    (my $broken = slurp($dropin)) =~ s{anthropic-key:/etc}{anthropic-key:etc};
    $broken .= "LoadCredentialEncryptd=typo:/x\n";
    ($rc, $out) = $verify->($broken);
    like($out, qr/relay-guard-key\.conf:\d+: Credential source "etc\/relay-guard\/anthropic-key\.cred" not valid/,
         'a relative .cred path in the drop-in is reported (the check can fail)');
    like($out, qr/Unknown key 'LoadCredentialEncryptd'/, 'and a misspelt directive');
};

done_testing();
