package RG::Server;
# A small nginx driver for tests Test::Nginx::Socket cannot express: several workers, HUP
# reloads mid-test, signing at the moment of sending, and loops until a condition holds.
# Uses the same TEST_NGINX_BINARY and TEST_NGINX_LOAD_MODULES as the rest of the suite, and runs
# nginx under RG_NGINX_WRAPPER when it is set (scripts/test --valgrind: a valgrind command line).
use strict;
use warnings;
use IO::Socket::INET;
use File::Path qw(make_path remove_tree);
use Time::HiRes qw(sleep time);

sub new {
    my ($class, %a) = @_;
    my $name = $a{name} // 'server';
    my $root = ($ENV{TEST_NGINX_SERVROOT} // "$ENV{PWD}/t/servroot") . "-$name";
    # main: more main-context lines (worker_shutdown_timeout, ...).
    my $self = bless { root => $root, port => $a{port} // free_port(),
                       workers => $a{workers} // 2, main => $a{main} // '' }, $class;
    return $self;
}

# A port nothing listens on now: the kernel picks it. (nginx listens with reuseport in some
# tests, so "bind failed" would not reveal a clash with another test's server.)
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
        or die "cannot find a free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# The command that starts nginx: RG_NGINX_WRAPPER's words (split on blanks, like Test::Nginx's
# TEST_NGINX_USE_VALGRIND) before the binary. Also for tests that run `nginx -t` themselves.
sub nginx_cmd {
    return (split(' ', $ENV{RG_NGINX_WRAPPER} // ''), $ENV{TEST_NGINX_BINARY} // 'nginx');
}

sub port { $_[0]{port} }
sub root { $_[0]{root} }
sub error_log { my $s = shift; local $/; open my $f, '<', "$s->{root}/logs/error.log" or return ''; <$f> }

# Writes nginx.conf with the given http-block body (PORT in it is replaced) and starts nginx.
sub start {
    my ($self, $http) = @_;
    remove_tree($self->{root});
    make_path("$self->{root}/conf", "$self->{root}/logs");
    $self->write_conf($http);
    system(nginx_cmd(), '-p', "$self->{root}/", '-c', "$self->{root}/conf/nginx.conf") == 0
        or die "nginx failed to start: " . $self->error_log;
    $self->wait_port;
    return $self;
}

sub write_conf {
    my ($self, $http) = @_;
    $http =~ s/\bPORT\b/$self->{port}/g;
    my $modules = join '', map { "load_module $_;\n" } split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
    open my $f, '>', "$self->{root}/conf/nginx.conf" or die $!;
    print $f "${modules}master_process on;\nworker_processes $self->{workers};\nuser root;\n"
           . "pid $self->{root}/logs/nginx.pid;\nerror_log $self->{root}/logs/error.log info;\n$self->{main}\n"
           . "events { worker_connections 256; }\nhttp {\n access_log off;\n$http\n}\n";
    close $f;
}

sub wait_port {
    my ($self) = @_;
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port});
        return 1 if $s;
        sleep 0.05;
    }
    die "nginx did not listen on $self->{port}";
}

sub master_pid {
    my ($self) = @_;
    open my $f, '<', "$self->{root}/logs/nginx.pid" or die "no pid file";
    my $pid = <$f>;
    chomp $pid;
    return $pid;
}

sub worker_pids {
    my ($self) = @_;
    my $m = $self->master_pid;
    my @pids = grep { /\d/ } map { s/\s//gr } `ps -o pid= --ppid $m`;
    return sort @pids;
}

# Sends HUP and waits until every worker has been replaced (the reload took effect).
sub reload {
    my ($self) = @_;
    my %old = map { $_ => 1 } $self->worker_pids;
    kill 'HUP', $self->master_pid;
    for (1 .. 200) {
        my @now = $self->worker_pids;
        return 1 if @now == $self->{workers} && !grep { $old{$_} } @now;
        sleep 0.05;
    }
    die "reload did not replace the workers: " . $self->error_log;
}

sub stop {
    my ($self) = @_;
    my $m = eval { $self->master_pid } or return;
    kill 'QUIT', $m;
    # Under a wrapper (valgrind) the master exits only after its leak check: wait for it, so
    # its report is complete before the test file (and scripts/test's check of the reports) ends.
    my $tries = $ENV{RG_NGINX_WRAPPER} ? 1200 : 100;
    for (1 .. $tries) { last unless alive($m); sleep 0.05 }
}

# True while PID runs. Not only kill 0: the daemonized master's parent may be a container's PID 1
# that never reaps it, and a zombie still takes signals.
sub alive {
    my ($pid) = @_;
    return 0 unless kill 0, $pid;
    open my $f, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$f> // '';
    return $stat !~ /\) Z /;
}

# The line of logs/$name written for the request tagged $tag (a log_format starting
# "tag=$http_x_tag ..." of name=value fields), as {name => value}. nginx writes it in the LOG
# phase, which can come after the client saw the response end, so this waits; undef after
# $timeout seconds (default 10).
sub tagged_log_line {
    my ($self, $name, $tag, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    my $file = "$self->{root}/logs/$name";
    while (1) {
        if (open my $f, '<', $file) {
            while (my $l = <$f>) {
                next unless index($l, "tag=$tag ") == 0;
                chomp $l;
                return { map { /^([a-z]+)=(.*)$/s ? ($1 => $2) : () } split / /, $l };
            }
        }
        return undef if time > $deadline;
        sleep 0.05;
    }
}

sub DESTROY { $_[0]->stop }

# One request on a new connection. Returns { status, headers => {lc name => value}, body }.
sub request {
    my ($self, $method, $target, $headers, $body) = @_;
    $body //= '';
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Timeout => 10)
        or die "connect: $!";
    my $h = $headers // '';
    $h =~ s/\r?\n/\r\n/g;
    print $s "$method $target HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$h"
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    my ($head, $rbody) = split /\r\n\r\n/, $resp, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.\d (\d+)};
    my %hdr = map { my ($k, $v) = split /:\s*/, $_, 2; (lc $k => $v) } split /\r\n/, ($head // '');
    return { status => $status // 0, headers => \%hdr, body => $rbody // '' };
}

1;
