package RG;
# Helpers shared by the relay-guard Test::Nginx suite: signing (wire protocol v1), the mock
# upstream's record, and the default keys. Core Perl only (Digest::SHA, JSON::PP). The helpers of
# one kind of test are in t/lib/RG/: Signed (the --- signed block section), Conf,
# Server, Metrics, Redact, Limits, Usage, Fleet and Lua.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use JSON::PP ();
use IO::Socket::INET;
use Exporter 'import';

our @EXPORT_OK = qw(sign_headers mock_record mock_reset nonce);

our $KEY_ID = 'alice';
our $SECRET = 'alice-secret-0123456789';
our $OLD_SECRET = 'alice-old-secret-987654';
my $counter = 0;

sub nonce {
    $counter++;
    return sprintf('n%d-%d-%08x', $$, $counter, int(rand(0xffffffff))) . 'abcdefgh';
}

sub string_to_sign {
    my (%a) = @_;
    return join("\n", 'RG1-HMAC-SHA256', $a{key_id}, $a{timestamp}, $a{nonce},
                $a{method}, $a{target}, sha256_hex($a{body} // ''));
}

# Signature headers for one request, as a "Name: value\n" block for --- more_headers.
# Options: key_id, secret, timestamp (default now), skew (seconds added to now), nonce, and
# override => {header => value} / drop => [header] to build malformed requests.
sub sign_headers {
    my (%a) = @_;
    $a{key_id} //= $KEY_ID;
    $a{secret} //= $SECRET;
    $a{timestamp} //= time() + ($a{skew} // 0);
    $a{nonce} //= nonce();
    my $sig = hmac_sha256_hex(string_to_sign(%a), $a{secret});
    my %h = ('X-Key-Id' => $a{key_id}, 'X-Timestamp' => $a{timestamp},
             'X-Nonce' => $a{nonce}, 'X-Signature' => $sig);
    %h = (%h, %{ $a{override} || {} });
    delete $h{$_} for @{ $a{drop} || [] };
    return join('', map { "$_: $h{$_}\n" } sort keys %h);
}

# GET/POST a control endpoint of the mock upstream (over TLS with tls => 1); returns the body.
# Undoes Transfer-Encoding: chunked on a raw body (stops at the last chunk or where the bytes
# stop making sense, so a cut stream gives what arrived).
sub dechunk {
    my ($s) = @_;
    my $out = '';
    while ($s =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
        my $n = hex $1;
        last if $n == 0;
        $out .= substr($s, 0, $n, '');
        $s =~ s/\A\r\n//;
    }
    return $out;
}

sub mock_http {
    my ($method, $path, %o) = @_;
    my $port = $o{tls} ? $ENV{TEST_NGINX_MOCK_TLS_PORT} : $ENV{TEST_NGINX_MOCK_PORT};
    my $s;
    if ($o{tls}) {
        require IO::Socket::SSL;
        $s = IO::Socket::SSL->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5,
                                  SSL_ca_file => "$ENV{TEST_NGINX_CA_DIR}/ca.pem",
                                  SSL_verifycn_name => 'localhost', SSL_hostname => 'localhost')
            or die "cannot reach the TLS mock on $port: $IO::Socket::SSL::SSL_ERROR";
    } else {
        $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
            or die "cannot reach the mock on $port: $!";
    }
    print $s "$method $path HTTP/1.1\r\nHost: mock\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    local $/;
    my $resp = <$s>;
    close $s;
    my ($body) = $resp =~ /\r\n\r\n(.*)\z/s;
    return $body;
}

sub mock_reset { mock_http('POST', '/__mock/reset'); return '' }

# The requests the mock upstream received since the last reset (array of hashes).
sub mock_record {
    return JSON::PP->new->decode(mock_http('GET', '/__mock/record'))->{requests};
}

1;

package RG;

# A complete HTTP/1.1 request as raw bytes (for chunked or split bodies), with signature
# headers from sign_headers(%sign). Returns the request text; pass chunks => [sizes] to send the
# body chunked.
sub raw_signed {
    my (%a) = @_;
    my $method = $a{method} // 'POST';
    my $target = $a{target} // '/v1/messages';
    my $body = $a{body} // '';
    my $h = sign_headers(method => $method, target => $target, body => $body, %{ $a{sign} || {} });
    $h =~ s/\n/\r\n/g;
    my $head = "$method $target HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
             . "Content-Type: application/json\r\n$h";
    if ($a{chunked}) {
        my $out = '';
        my $rest = $body;
        while (length $rest) {
            my $piece = substr($rest, 0, $a{chunked}, '');
            $out .= sprintf("%x\r\n%s\r\n", length $piece, $piece);
        }
        return $head . "Transfer-Encoding: chunked\r\n\r\n" . $out . "0\r\n\r\n";
    }
    return $head . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
}

# A JSON Messages API body of about $n bytes.
sub json_body {
    my ($n) = @_;
    my $head = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"';
    my $tail = '"}]}';
    my $pad = $n - length($head) - length($tail);
    $pad = 0 if $pad < 0;
    return $head . ('x' x $pad) . $tail;
}

# A short-lived token: rgt1.<key id>.<expiry>.<hex HMAC-SHA256(secret, "rgt1.<key id>.<expiry>")>.
sub mint {
    my (%a) = @_;
    my $kid = $a{key_id} // $KEY_ID;
    my $exp = $a{expiry} // (time() + ($a{ttl} // 600));
    my $signed = "rgt1.$kid.$exp";
    return "$signed." . hmac_sha256_hex($signed, $a{secret} // $SECRET);
}

our $STATIC_TOKEN = 'team-a-static-token-0123456789';
our $UPSTREAM_KEY = 'sk-ant-api03-relayguardTESTupstreamKEY0123456789abcdefABCDEF-xyzAA';

# The headers a mock record entry holds, as a lowercase-name => [values] hash.
sub record_headers {
    my ($entry) = @_;
    my %h;
    push @{ $h{lc $_->[0]} }, $_->[1] for @{ $entry->{headers} };
    return \%h;
}

# The project's Python with the official SDK (target/venv, made by scripts/setup) for the
# files that drive real clients; skips the whole file, saying why, when it is not usable.
sub sdk_python_or_skip {
    my ($root) = @_;
    require Test::More;
    my $py = "$root/target/venv/bin/python";
    Test::More::plan(skip_all => "no $py: run scripts/setup (scripts/test does) to create the venv with the anthropic SDK")
        unless -x $py;
    Test::More::plan(skip_all => "$py cannot import anthropic and httpx2: re-run scripts/setup")
        unless system($py, '-c', 'import anthropic, httpx2') == 0;
    return $py;
}

1;
