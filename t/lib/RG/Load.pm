package RG::Load;
# Bounded load for the fault tests (t/007-t/010), on top of RG::Server: keep-alive HTTP/1.1
# clients in forked processes that classify every request they make, a pipelined flood, and
# the config of an upstream inside the nginx under test (so no test here needs the mock
# upstream or a fixed port). Core Perl only.
#
# What counts as nginx's own keep-alive close (outcome "ka_close", counted apart from
# failures): a request written to a connection that had already carried at least one complete
# response, answered by EOF or a reset before a single byte of response. nginx does that to
# an idle keep-alive connection when a worker shuts down gracefully (ngx_close_idle_connections
# on reload, upgrade or quit) and after the last response of a worker that is exiting; the
# request was never read. Callers prove that for each one: its X-Load-Id never reached the
# upstream (upstream_ids), and a signed one, resent unchanged on a new connection, is admitted
# (its nonce was never recorded). Anything else that is not a complete response is "fail".
use strict;
use warnings;
use Errno qw(EINTR EAGAIN ECONNRESET EPIPE);
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Time::HiRes qw(time sleep);
use RG ();

# The upstream the relay locations proxy to: a server of the nginx under test that answers
# 200 and logs each request's X-Load-Id to logs/upstream.log (relative to the prefix).
sub upstream_conf {
    my ($port) = @_;
    return <<"EOC";
    log_format rg_load_ids '\$http_x_load_id';
    server {
        listen 127.0.0.1:$port;
        access_log logs/upstream.log rg_load_ids;
        location / { return 200 '{"ok":true}'; }
    }
EOC
}

# The http-block body the fault tests (t/007-010) run: a relay on PORT with 2 workers'
# reuseport listener, whose / answers with X-Pid and X-RG-Status and proxies to
# upstream_conf($o{upstream}), plus /metrics. Options: data (the keys' directory), zone
# (default rg:1m), mode (default any), server (extra server-level lines).
sub relay_conf {
    my (%o) = @_;
    my $zone = $o{zone} // 'rg:1m';
    my $mode = $o{mode} // 'any';
    my $extra = $o{server} // '';
    return upstream_conf($o{upstream}) . <<"EOC";
    relay_guard_zone $zone;
    relay_guard_keys $o{data}/keys.json;
    server {
        listen 127.0.0.1:PORT reuseport;
$extra
        location / {
            relay_guard $mode;
            add_header X-Pid \$pid always;
            add_header X-RG-Status \$relay_guard_status always;
            proxy_pass http://127.0.0.1:$o{upstream};
        }
        location = /metrics {
            relay_guard off;
            relay_guard_metrics;
        }
    }
EOC
}

# "STATUS RG-STATUS" of a response, e.g. "401 REPLAY".
sub status_of { my ($r) = @_; ($r->{status} // 0) . ' ' . ($r->{headers}{'x-rg-status'} // '') }

# The X-Load-Id values the upstream saw, as a hash id => times seen.
sub upstream_ids {
    my ($srv) = @_;
    my %ids;
    open my $f, '<', $srv->root . '/logs/upstream.log' or return {};
    while (<$f>) { chomp; $ids{$_}++ if $_ ne '' && $_ ne '-' }
    return \%ids;
}

# --- one connection --------------------------------------------------------------------------

sub connect_to {
    my ($port, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Timeout => $timeout // 5) or return undef;
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    $s->blocking(0);
    return $s;
}

# Writes $bytes, then reads one complete response (Content-Length or chunked). Returns
# { status, headers => {lc name => value}, body, got => bytes read, err => undef | 'eof' |
# 'reset' | 'epipe' | 'timeout' | 'partial' | text, keep => server keeps the connection }.
# $o{write_only} returns after writing (for requests the caller completes later).
sub exchange {
    my ($s, $bytes, %o) = @_;
    my $deadline = time + ($o{timeout} // 5);
    my $sel = IO::Select->new($s);
    my $off = 0;
    while ($off < length $bytes) {
        return { got => 0, err => 'timeout' } unless $sel->can_write($deadline - time);
        my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            return { got => 0, err => $! == EPIPE ? 'epipe' : $! == ECONNRESET ? 'reset' : "write: $!" };
        }
        $off += $n;
    }
    return { got => 0 } if $o{write_only};
    return read_response($s, $deadline, $o{buffer});
}

# Reads one response; $buf (a scalar ref) holds bytes already read past the previous one.
sub read_response {
    my ($s, $deadline, $buf) = @_;
    my $in = '';
    $buf //= \$in;
    my $sel = IO::Select->new($s);
    my $got = length $$buf;
    my ($head, $need, %h, $status);
    while (1) {
        if (!defined $head && (my $i = index($$buf, "\r\n\r\n")) >= 0) {
            $head = substr($$buf, 0, $i + 4, '');
            ($status) = $head =~ m{^HTTP/1\.\d (\d{3})};
            for (split /\r\n/, $head) { $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/ }
        }
        if (defined $head) {
            if (($h{'transfer-encoding'} // '') =~ /chunked/i) {
                my $end = chunked_end($$buf);
                return done($status, \%h, dechunk(substr($$buf, 0, $end, '')), $got)
                    if defined $end;
            } else {
                $need //= $h{'content-length'} // 0;
                if (length $$buf >= $need) {
                    return done($status, \%h, substr($$buf, 0, $need, ''), $got);
                }
            }
        }
        my $left = $deadline - time;
        return { got => $got, err => 'timeout' } if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($s, $$buf, 65536, length $$buf);
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            return { got => $got, err => $! == ECONNRESET ? ($got ? 'partial' : 'reset') : "read: $!" };
        }
        return { got => $got, err => $got ? 'partial' : 'eof' } if $n == 0;
        $got += $n;
    }
}

sub done {
    my ($status, $h, $body, $got) = @_;
    my $keep = lc($h->{connection} // 'keep-alive') ne 'close';
    return { status => $status, headers => $h, body => $body, got => $got, keep => $keep };
}

# Where a complete chunked body ends in $s (undef while incomplete); trailers are not used.
sub chunked_end {
    my ($s) = @_;
    my $at = 0;
    while ((my $eol = index($s, "\r\n", $at)) >= 0) {
        my ($hex) = substr($s, $at, $eol - $at) =~ /\A([0-9a-fA-F]+)/ or return undef;
        my $n = hex $hex;
        my $next = $eol + 2 + $n + 2;
        return undef if length($s) < $next;
        return $next if $n == 0;
        $at = $next;
    }
    return undef;
}

sub dechunk { RG::dechunk(@_) }

# One request on a new connection, closed afterwards.
sub once {
    my ($port, $bytes, %o) = @_;
    my $s = connect_to($port) or return { got => 0, err => "connect: $!" };
    my $r = exchange($s, $bytes, %o);
    close $s;
    return $r;
}

# --- requests --------------------------------------------------------------------------------

our $BODY = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}';

# A signed POST /v1/messages as raw bytes (signed now unless $a{timestamp}); {bytes, nonce}.
# $a{id} becomes X-Load-Id (not signed, so a resend may carry another id).
sub signed_request {
    my (%a) = @_;
    my $target = $a{target} // '/v1/messages';
    my $body = $a{body} // $BODY;
    my $nonce = $a{nonce} // RG::nonce();
    my $h = RG::sign_headers(method => 'POST', target => $target, body => $body, nonce => $nonce,
                             map { $_ => $a{$_} } grep { exists $a{$_} } qw(key_id secret timestamp));
    return { nonce => $nonce, bytes => head('POST', $target, $h, $a{id}, length $body) . $body };
}

sub token_request {
    my (%a) = @_;
    return { bytes => head('GET', '/v1/models',
                           "Authorization: Bearer " . ($a{token} // $RG::STATIC_TOKEN) . "\n", $a{id}) };
}

sub head {
    my ($method, $target, $headers, $id, $clen) = @_;
    $headers .= "X-Load-Id: $id\n" if defined $id;
    $headers .= "Content-Length: $clen\n" if defined $clen;
    $headers =~ s/\r?\n/\r\n/g;
    return "$method $target HTTP/1.1\r\nHost: localhost\r\n${headers}\r\n";
}

# The same request with another X-Load-Id.
sub with_id {
    my ($bytes, $id) = @_;
    $bytes =~ s/^X-Load-Id: [^\r]*\r\n/X-Load-Id: $id\r\n/m;
    return $bytes;
}

# --- forked clients --------------------------------------------------------------------------

# Starts one forked client per spec and returns a handle; each stops at $o{seconds} (a hard
# bound) or when stop() is called, and writes one line per request to its file in $o{dir}.
# A spec is { kind => signed | token | scrape | list, ... }:
#   signed      signed POSTs as alice, each signed as it is sent; every 5th request replays
#               one of those admitted earlier (unless replays => 0), which must get 401 REPLAY
#   token       GETs with the static token
#   scrape      GET $spec->{path} (/metrics) on a new connection every 50 ms; records every
#               series whose value went down
#   list        sends $spec->{requests} (raw bytes) in order, once each (cycle => 1: over and
#               over until stopped)
# Common: port, keep (max requests per connection, default 20), pause (seconds between
# requests, default 0.001), tag (id prefix).
sub spawn {
    my (%o) = @_;
    my $dir = $o{dir} or die 'spawn needs dir';
    my $stop = "$dir/stop";
    unlink $stop;
    my @kids;
    my $i = 0;
    for my $spec (@{ $o{clients} }) {
        $i++;
        my $file = "$dir/client-$i.tsv";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            $SIG{PIPE} = 'IGNORE';
            my $ok = eval { client_main({ %$spec, tag => $spec->{tag} // "c$i" }, $file,
                                        time + $o{seconds}, $stop); 1 };
            if (!$ok) { open my $f, '>>', $file; print $f "error\t$@\n" }
            POSIX::_exit(0);
        }
        push @kids, { pid => $pid, file => $file, spec => $spec };
    }
    return bless { kids => \@kids, stop => $stop, seconds => $o{seconds} }, 'RG::Load::Run';
}

sub client_main {
    my ($spec, $file, $deadline, $stop) = @_;
    open my $out, '>', $file or die "$file: $!";
    $out->autoflush(1);
    my $kind = $spec->{kind};
    my $port = $spec->{port};
    my $keep = $spec->{keep} // 20;
    my $pause = $spec->{pause} // 0.001;
    my ($s, $used) = (undef, 0);
    my ($seq, @admitted, %last) = (0);
    my @list = @{ $spec->{requests} || [] };
    my $log = sub { print $out join("\t", map { $_ // '' } @_), "\n" };
    while (time < $deadline && !-e $stop) {
        if ($kind eq 'scrape') {
            my $r = once($port, head('GET', $spec->{path} // '/metrics', '', undef));
            if (($r->{status} // 0) != 200) {
                $log->('scrape', 'fail', $r->{status}, $r->{err});
                sleep 0.05;
                next;
            }
            my $m = eval { RG::Metrics::parse($r->{body}) } // {};
            # A series is exported once it is non-zero, so one that vanished went down to 0.
            for my $k (sort keys %last) {
                my $v = $m->{$k} // 0;
                $log->('scrape', 'decrease', $k, "$last{$k} -> " . ($m->{$k} // 'absent'))
                    if $v < $last{$k};
            }
            %last = %$m;
            $log->('scrape', 'ok', scalar keys %$m);
            sleep 0.05;
            next;
        }
        my $id = "$spec->{tag}-" . ++$seq;
        my ($req, $what);
        if ($kind eq 'list') {
            last unless @list;
            $req = { bytes => shift @list };
            push @list, $req->{bytes} if $spec->{cycle};
            ($req->{nonce}) = $req->{bytes} =~ /^X-Nonce: (\S+)\r$/m;
            $what = 'signed';
        } elsif ($kind eq 'token') {
            ($req, $what) = (token_request(id => $id), 'token');
        } elsif ($seq % 5 == 0 && @admitted && ($spec->{replays} // 1)) {
            my $old = $admitted[rand @admitted];
            ($req, $what) = ({ bytes => with_id($old->{bytes}, $id), nonce => $old->{nonce} }, 'replay');
        } else {
            ($req, $what) = (signed_request(id => $id), 'signed');
        }
        if (!$s || $used >= $keep) { close $s if $s; $s = connect_to($port); $used = 0 }
        if (!$s) { $log->($id, $what, 'fail', '', '', 0, "connect: $!"); sleep 0.01; next }
        my $reused = $used > 0;
        my $r = exchange($s, $req->{bytes});
        $used++;
        my $outcome = classify($r, $reused);
        my $rg = $r->{headers}{'x-rg-status'} // '';
        $log->($id, $what, $outcome, $r->{status}, $rg, $reused ? 1 : 0, $r->{err} // '',
               $r->{headers}{'x-pid'}, $req->{nonce} // '', sprintf('%.3f', time));
        if ($outcome eq 'ka_close' && $kind ne 'list') {
            # Resent unchanged but for its id: a signed request must be admitted (its nonce was
            # never recorded), a replay refused.
            my $rid = "$id-resent";
            my $again = once($port, with_id($req->{bytes}, $rid));
            $log->($rid, "$what-resent", classify($again, 0), $again->{status},
                   $again->{headers}{'x-rg-status'} // '', 0, $again->{err} // '',
                   $again->{headers}{'x-pid'}, $req->{nonce} // '', sprintf('%.3f', time));
            push @admitted, $req if $what eq 'signed' && ($again->{status} // 0) == 200 && $seq % 4 == 1;
        }
        push @admitted, $req if $what eq 'signed' && ($r->{status} // 0) == 200 && $seq % 4 == 1;
        if ($outcome ne 'ok' || !$r->{keep}) { close $s; $s = undef }
        sleep $pause if $pause;
    }
    close $s if $s;
    $log->('end', 'end');
    close $out;
}

sub classify {
    my ($r, $reused) = @_;
    return 'ok' if defined $r->{status};
    return 'ka_close' if $reused && !$r->{got} && ($r->{err} // '') =~ /^(eof|reset|epipe)$/;
    return 'fail';
}

# --- a pipelined flood -----------------------------------------------------------------------

# Sends the raw requests in @$reqs, $o{batch} (default 50) per connection in one write, one
# connection after another, and returns the responses in order (each as read_response returns
# it; the requests after a broken one get {err}).
sub pipeline {
    my ($port, $reqs, %o) = @_;
    my $batch = $o{batch} // 50;
    my @out;
    my $i = 0;
    while ($i < @$reqs) {
        my $s = connect_to($port) or die "connect: $!";
        my $end = $i + $batch > @$reqs ? scalar @$reqs : $i + $batch;
        my $r = exchange($s, join('', @$reqs[$i .. $end - 1]), write_only => 1);
        if ($r->{err}) { push @out, $r for $i .. $end - 1; $i = $end; next }
        my $buf = '';
        for my $j ($i .. $end - 1) {
            my $resp = read_response($s, time + ($o{timeout} // 10), \$buf);
            push @out, $resp;
            if ($resp->{err}) { push @out, { err => 'not read' } for $j + 1 .. $end - 1; last }
        }
        close $s;
        $i = $end;
    }
    return \@out;
}

package RG::Load::Run;
use Time::HiRes qw(time sleep);

# Tells the clients to stop and waits (bounded) for them; returns the parsed lines.
sub stop {
    my ($self) = @_;
    open my $f, '>', $self->{stop} or die "$self->{stop}: $!";
    close $f;
    my $until = time + 15;
    for my $k (@{ $self->{kids} }) {
        while (waitpid($k->{pid}, POSIX::WNOHANG()) == 0) {
            if (time > $until) { kill 'KILL', $k->{pid}; waitpid($k->{pid}, 0); last }
            sleep 0.02;
        }
    }
    return $self->results;
}

# Every client's lines as arrays: [id, what, outcome, status, rg_status, reused, err, pid,
# nonce, time]; scrape lines are ['scrape', outcome, ...]; a client that died says 'error'.
sub results {
    my ($self) = @_;
    my @rows;
    for my $k (@{ $self->{kids} }) {
        open my $f, '<', $k->{file} or next;
        while (<$f>) { chomp; push @rows, [split /\t/, $_, -1] }
    }
    return \@rows;
}

sub DESTROY {
    my ($self) = @_;
    for my $k (@{ $self->{kids} }) { kill 'KILL', $k->{pid} if waitpid($k->{pid}, POSIX::WNOHANG()) == 0 }
}

require RG::Metrics;

1;
