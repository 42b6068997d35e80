# The shared test vectors (t/data/vectors.json), sent through the real module: every valid
# vector verifies and every invalid one fails for the stated reason. The Rust unit tests and
# the Python client check the same file, so all three agree byte for byte.
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use File::Path qw(make_path);

my $data = $ENV{TEST_NGINX_DATA_DIR} or die "TEST_NGINX_DATA_DIR not set";
my $v = do { local $/; open my $f, '<', "$data/vectors.json" or die $!; decode_json(<$f>) };

# Each vector gets a keys file with only its own key and secret: one key id's secrets in
# different vectors must not verify each other's signatures.
my $dir = ($ENV{TEST_NGINX_SERVROOT} // "$ENV{PWD}/t/servroot") . "-vectors";
make_path($dir);
sub keys_file {
    my ($c, $i) = @_;
    my $path = "$dir/keys-$i.json";
    open my $kf, '>:raw', $path or die $!;
    my $id = $c->{key_id} =~ /\A[A-Za-z0-9._-]{1,64}\z/ ? $c->{key_id} : 'placeholder';
    print $kf JSON::PP->new->utf8->encode({ keys => [ { id => $id, secrets => [ $c->{secret} ] } ] });
    close $kf;
    return $path;
}

sub raw_request {
    my ($c) = @_;
    my $body = decode_base64($c->{body_b64});
    my $r = "$c->{method} $c->{target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
          . "X-Key-Id: $c->{key_id}\r\nX-Timestamp: $c->{timestamp}\r\nX-Nonce: $c->{nonce}\r\n"
          . "X-Signature: $c->{signature}\r\n";
    $r .= "Content-Length: " . length($body) . "\r\n" if length $body;
    return "$r\r\n$body";
}

my $spec = '';
my $i = 0;
for my $kind (qw(valid invalid)) {
    for my $c (@{ $v->{signature}{$kind} }) {
        $i++;
        my $want = $kind eq 'valid' ? 'OK' : $c->{expect};
        $::RAW[$i] = raw_request($c);
        my $keys = keys_file($c, $i);
        # Past the module, the mock answers whatever it answers for that path.
        my $code = $kind eq 'valid' ? "--- error_code_like: ^(200|404|405)\$\n" : "--- error_code: 401\n";
        my $status = "--- response_headers\nX-RG-Status: $want\n";
        if ($c->{method} !~ /\A[A-Z]+\z/) {
            # nginx itself refuses a method that is not upper case, before any module runs.
            ($code, $status) = ("--- error_code: 400\n", '');
        }
        $spec .= <<"_EOB_";
=== TEST $i: $kind vector "$c->{name}" -> $want
--- http_config
    relay_guard_zone rg_v$i:1m;
    relay_guard_keys $keys;
    # The vectors carry fixed 2026-01-01 timestamps.
    relay_guard_clock_skew 3650d;
--- config
    location / {
        relay_guard signature;
        add_header X-RG-Status \$relay_guard_status always;
        proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
    }
--- raw_request eval
\$::RAW[$i]
--- suppress_stderr
$code$status
_EOB_
    }
}

repeat_each(1);
no_shuffle();
no_root_location();
no_long_string();
Test::Nginx::Socket::spec_string($spec) if Test::Nginx::Socket->can('spec_string');
run_tests();
