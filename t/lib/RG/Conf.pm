package RG::Conf;
# Helpers for the t/02x-conf-*.t files, which test the shipped drop-in configs in nginx-conf/
# ($TEST_NGINX_CONF_DIR) rather than hand-written locations.
#
# Each block's server root gets conf/relay-guard/ holding symlinks to the shipped snippets (so
# their relative "include relay-guard/..." lines resolve as in a real install) and a generated
# upstream.conf: the shipped one with the address, scheme, host name, CA and key file swapped for
# the loopback mock. Wire it with
#     --- post_setup_server_root: RG::Conf::setup(upstream => 'tls')
# (the default preprocessor below does it for every block), then include the snippets in
# http_config/config as nginx.conf does.
use strict;
use warnings;
use File::Basename qw(basename);
use File::Path qw(make_path);
use IO::Socket::INET;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use Test::Nginx::Util ();
use RG ();

our $DOWN_PORT = 1;    # nothing listens on 127.0.0.1:1: connect is refused at once

sub conf_dir { $ENV{TEST_NGINX_CONF_DIR} or die "TEST_NGINX_CONF_DIR is not set" }
sub server_port { $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984 }

sub slurp {
    my ($path) = @_;
    open my $f, '<', $path or die "cannot read $path: $!";
    local $/;
    return scalar <$f>;
}

sub spew {
    my ($path, $text) = @_;
    open my $f, '>', $path or die "cannot write $path: $!";
    print $f $text;
    close $f or die "cannot write $path: $!";
}

# The shipped upstream.conf rewritten for a test upstream. kind: tls (the mock over TLS with the
# test CA), plain (the mock over HTTP), down (a closed port). Dies if the shipped file no longer
# has a line this relies on, so drift shows up as a test failure, not a silently ignored swap.
sub upstream_conf {
    my (%o) = @_;
    my $kind = $o{upstream} // 'tls';
    my ($scheme, $addr) =
          $kind eq 'tls'   ? ('https', "127.0.0.1:$ENV{TEST_NGINX_MOCK_TLS_PORT}")
        : $kind eq 'plain' ? ('http',  "127.0.0.1:$ENV{TEST_NGINX_MOCK_PORT}")
        : $kind eq 'tls2'  ? ('https', "127.0.0.1:$ENV{TEST_NGINX_MOCK_TLS_PORT};\n    server 127.0.0.1:$ENV{TEST_NGINX_MOCK_TLS_PORT}")
        : $kind eq 'down'  ? ('https', "127.0.0.1:$DOWN_PORT")
        : die "unknown upstream kind $kind";
    my $host = $o{host} // 'localhost';
    my $ca = "$ENV{TEST_NGINX_CA_DIR}/ca.pem";
    my $key = "$ENV{TEST_NGINX_DATA_DIR}/upstream-key";
    my $text = slurp(conf_dir() . '/upstream.conf');
    my @swaps = (
        [qr/^(\s*server\s+)api\.anthropic\.com:443;/m, "$addr;"],
        [qr/(\$relay_upstream_scheme\s*\{\s*default\s+)https;/, "$scheme;"],
        # the test certificate is for localhost (and 127.0.0.1, mock.upstream.test)
        [qr/(\$relay_upstream_host\s*\{\s*default\s+)api\.anthropic\.com;/, "$host;"],
        [qr/^(\s*relay_guard_upstream_key_file\s+)\S+;/m, "$key;"],
        [qr/^(\s*proxy_ssl_trusted_certificate\s+)\S+;/m, "$ca;"],
    );
    for my $s (@swaps) {
        my ($re, $to) = @$s;
        $text =~ s/$re/$1$to/ or die "upstream.conf: no line matches $re";
    }
    return $text;
}

# Runs in the server root after Test::Nginx cleaned it (post_setup_server_root).
sub setup {
    my (%o) = @_;
    my $dir = "$Test::Nginx::Util::ConfDir/relay-guard";
    make_path($dir);
    for my $f (glob(conf_dir() . '/*.conf')) {
        my $name = basename($f);
        next if $name eq 'upstream.conf';
        unlink "$dir/$name";
        symlink($f, "$dir/$name") or die "symlink $dir/$name: $!";
    }
    spew("$dir/upstream.conf", upstream_conf(%o));
    return 1;
}

# The default wiring of a block: the shipped snippets, as nginx.conf includes them, with
# relay_guard in token mode for the test keys. Blocks override any part.
sub preprocessor {
    my ($block) = @_;
    $block->set_value(post_setup_server_root => 'RG::Conf::setup()')
        unless defined $block->post_setup_server_root;
    $block->set_value(http_config => <<'_EOC_') unless defined $block->http_config;
    include relay-guard/http.conf;
    include relay-guard/upstream.conf;
_EOC_
    $block->set_value(config => <<'_EOC_') unless defined $block->config;
    relay_guard any;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    include relay-guard/server.conf;
    include relay-guard/locations.conf;
_EOC_
    $block->set_value(no_check_leak => 1);
}

# --- the mock upstream's control endpoints (over TLS when asked) ---------------------------

sub mock_reset { RG::mock_http('POST', '/__mock/reset', @_); return 1 }
sub mock_record { JSON::PP->new->decode(RG::mock_http('GET', '/__mock/record', @_)) }

# --- a raw HTTP/1.1 client that timestamps what it reads ------------------------------------

# Sends $request (complete bytes) to the nginx under test and reads until the server closes or
# $o{timeout} passes. Returns {status, headers (lowercased name => value), body (de-chunked),
# chunks => [[time since the request was written, bytes]...], t_headers}.
sub timed_request {
    my ($request, %o) = @_;
    my $timeout = $o{timeout} // 10;
    # nginx may still be starting (under valgrind it takes seconds): retry a refused connect.
    my $deadline = time + ($ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 5);
    my $s;
    until ($s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => server_port(),
                                      Timeout => 5)) {
        die "cannot connect to nginx: $!" if time > $deadline;
        select(undef, undef, undef, 0.1);
    }
    $s->autoflush(1);
    my $t0 = time;
    print $s $request;
    my ($raw, @chunks) = ('');
    my $sel = IO::Select->new($s);
    while (time - $t0 < $timeout) {
        last unless $sel->can_read($timeout - (time - $t0));
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        push @chunks, [time - $t0, $buf];
        $raw .= $buf;
    }
    close $s;
    my ($head, $rest) = split /\r\n\r\n/, $raw, 2;
    $rest //= '';
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d{3})};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    my $body = ($h{'transfer-encoding'} // '') =~ /chunked/ ? dechunk($rest) : $rest;
    return {status => $status, headers => \%h, body => $body, chunks => \@chunks, raw => $raw,
            elapsed => time - $t0};
}

# One request to the nginx under test: method, target, [header => value ...], body.
sub http {
    my ($method, $target, $headers, $body, %o) = @_;
    $body //= '';
    my $req = "$method $target HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
    my @h = @{ $headers || [] };
    while (my ($k, $v) = splice @h, 0, 2) { $req .= "$k: $v\r\n" }
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body or $method eq 'POST';
    return timed_request("$req\r\n$body", %o);
}

sub dechunk { RG::dechunk(@_) }

# When (seconds after the request) the $nth (default 1st) occurrence of $needle had fully
# arrived, from timed_request's chunks. A read can split a needle, so this scans the running
# total.
sub arrival {
    my ($res, $needle, $nth) = @_;
    $nth //= 1;
    my $seen = '';
    for my $c (@{ $res->{chunks} }) {
        $seen .= $c->[1];
        my ($count, $at) = (0, 0);
        while (($at = index($seen, $needle, $at)) >= 0) { $count++; $at += length $needle }
        return $c->[0] if $count >= $nth;
    }
    return undef;
}

require IO::Select;

1;
