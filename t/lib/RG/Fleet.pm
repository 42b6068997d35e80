package RG::Fleet;
# Helpers for the fleet tests (t/070-072, issue 14) on top of RG::Server: a background helper
# process (the scripted fake Redis, a real redis-server on a private port and directory) that
# is always stopped, the http block of a relay pointed at a Redis upstream (the `closed` and
# the `local` failure policy side by side), and a signed request with a bounded answer time,
# so a relay that never answers fails the test instead of hanging it.
use strict;
use warnings;
use Digest::SHA ();
use File::Basename qw(dirname);
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);
use RG;
use RG::Server;

our $ROOT = File::Spec->rel2abs(dirname(__FILE__) . '/../../..');
our %SECRETS = (alice => 'alice-secret-0123456789', rl => 'rl-secret-0123456789abcd');
our $TOKEN = 'tok-fleet-0123456789abcdef';

my @children;
END { local $?; stop_all() }
sub stop_all {
    for my $pid (@children) { kill 'KILL', $pid; waitpid($pid, 0) }
    @children = ();
}

# Starts a command in the background with its output in $log; waits until the log matches
# $ready (up to 10 s). Returns the pid; dies with the log otherwise. Stopped at exit.
sub spawn {
    my ($log, $ready, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    push @children, $pid;
    for (1 .. 200) {
        my $text = slurp($log) // '';
        return $pid if $text =~ $ready;
        die "@cmd exited: $text" if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.05;
    }
    die "@cmd not ready after 10 s: " . (slurp($log) // '');
}

sub stop {
    my ($pid, $sig) = @_;
    kill $sig // 'KILL', $pid;
    waitpid($pid, 0);
    @children = grep { $_ != $pid } @children;
}

sub slurp { my ($p) = @_; open my $f, '<', $p or return undef; local $/; scalar <$f> }
sub spew { my ($p, $t) = @_; open my $f, '>', $p or die "$p: $!"; print $f $t; close $f or die "$p: $!" }

# The keys file: alice (signs, no limits), rl (signs, 6 a minute with a burst of 3), team (a
# static token: never a nonce), and the extra ones.
# More signing keys without limits: extra => [ids] (secret: secret_of(id)).
sub secret_of { $SECRETS{$_[0]} // "$_[0]-secret-0123456789abcdef" }
sub write_keys {
    my ($path, %o) = @_;
    spew($path, JSON::PP->new->canonical->encode({ keys => [
        { id => 'alice', secrets => [$SECRETS{alice}], limits => {} },
        { id => 'rl', secrets => [$SECRETS{rl}], limits => { requests_per_minute => 6, burst => 3 } },
        { id => 'team', token_sha256 => Digest::SHA::sha256_hex($TOKEN) },
        map { { id => $_, secrets => [secret_of($_)], limits => {} } } @{ $o{extra} || [] },
    ] }));
}

# The http block of a relay: Redis at $o{redis} (host:port) as an upstream block (or
# $o{upstream}: the upstream block's lines), relay_guard_redis with $o{redis_args} (e.g. "timeout=100ms prefix=t:"), the keys file
# $o{keys}. Locations: /v1/ (signature, the default policy: closed), /local/v1/ (signature,
# local), /token/v1/ (token), /metrics, and $o{server} (more server-level lines); every answer
# carries X-RG-Status and X-Pid.
sub http_conf {
    my (%o) = @_;
    my $mock = $ENV{TEST_NGINX_MOCK_PORT} or die 'TEST_NGINX_MOCK_PORT not set';
    my $args = $o{redis_args} // '';
    my $zone = $o{zone} // 'rg:1m';
    my $extra = $o{server} // '';
    return <<"EOC";
    upstream rg_redis { ${\ ($o{upstream} // "server $o{redis};") } }
    relay_guard_redis rg_redis $args;
    relay_guard_zone $zone;
    relay_guard_keys $o{keys};
    server {
        listen 127.0.0.1:PORT reuseport;
        add_header X-RG-Status \$relay_guard_status always;
        add_header X-Pid \$pid always;
        proxy_http_version 1.1;
        proxy_read_timeout 10s;
        location /v1/ { relay_guard signature; proxy_pass http://127.0.0.1:$mock; }
        location /local/v1/ {
            relay_guard signature;
            relay_guard_redis_failure local;
            proxy_pass http://127.0.0.1:$mock/v1/;
        }
        location /token/v1/ { relay_guard token; proxy_pass http://127.0.0.1:$mock/v1/; }
        location = /metrics { relay_guard off; relay_guard_metrics; }
$extra
    }
EOC
}

sub body { '{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}' }

# A signed request as raw bytes (so a replay is byte for byte the same).
sub signed {
    my (%o) = @_;
    my $key = $o{key} // 'alice';
    my $target = $o{target} // '/v1/messages';
    my $body = $o{body} // body();
    my $h = RG::sign_headers(key_id => $key, secret => secret_of($key), method => 'POST',
                             target => $target, body => $body, %{ $o{sign} || {} });
    $h =~ s/\n/\r\n/g;
    return "POST $target HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$h"
         . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
}

sub token_request {
    my (%o) = @_;
    my $body = body();
    return "POST /token/v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
         . "x-api-key: $TOKEN\r\nContent-Type: application/json\r\nContent-Length: "
         . length($body) . "\r\n\r\n$body";
}

# Sends raw request bytes to 127.0.0.1:$port and reads the answer for at most $timeout
# seconds. Returns { status (0 when none), headers, body, seconds, timed_out }.
sub send_raw {
    my ($port, $bytes, $timeout) = @_;
    $timeout //= 5;
    my $t0 = time;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => $timeout)
        or return { status => 0, headers => {}, body => '', seconds => time - $t0, error => "connect: $!" };
    $s->syswrite($bytes);
    my $sel = IO::Select->new($s);
    my $resp = '';
    my $timed_out = 0;
    while (1) {
        my $left = $t0 + $timeout - time;
        if ($left <= 0 || !$sel->can_read($left)) { $timed_out = 1; last }
        my $n = $s->sysread(my $buf, 65536);
        last unless $n;
        $resp .= $buf;
    }
    close $s;
    my ($head, $rbody) = split /\r\n\r\n/, $resp, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %hdr = map { my ($k, $v) = split /:\s*/, $_, 2; (lc $k => $v) } split /\r\n/, ($head // '');
    return { status => $status // 0, headers => \%hdr, body => $rbody // '',
             seconds => time - $t0, timed_out => $timed_out };
}

# "STATUS RG_STATUS" of an answer, for is().
sub verdict { my ($r) = @_; "$r->{status} " . ($r->{headers}{'x-rg-status'} // '') }

# True when an answer is the documented `closed` refusal: 503, retry-after, overloaded_error,
# STORE_UNAVAILABLE. Returns (ok, why-not).
sub is_unavailable {
    my ($r) = @_;
    return (0, "status $r->{status}") unless $r->{status} == 503;
    return (0, 'no retry-after') unless ($r->{headers}{'retry-after'} // '') =~ /^\d+$/;
    return (0, 'x-rg-status ' . ($r->{headers}{'x-rg-status'} // '-'))
        unless ($r->{headers}{'x-rg-status'} // '') eq 'STORE_UNAVAILABLE';
    my $j = eval { JSON::PP->new->decode(RG::dechunk_if($r)) };
    return (0, 'body not JSON: ' . substr($r->{body}, 0, 100)) unless ref $j eq 'HASH';
    return (0, 'error.type ' . ($j->{error}{type} // '-'))
        unless $j->{type} eq 'error' && ($j->{error}{type} // '') eq 'overloaded_error';
    return (1, '');
}

package RG;
sub dechunk_if {
    my ($r) = @_;
    return ($r->{headers}{'transfer-encoding'} // '') =~ /chunked/i ? RG::dechunk($r->{body}) : $r->{body};
}

1;
