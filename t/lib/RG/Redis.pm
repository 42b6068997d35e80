package RG::Redis;
# Debian's redis-server for one test, on loopback: a private port and directory under the
# test's temp dir, no persistence, a random password (also written to DIR/pass, mode 0600, for
# relay_guard_redis password_file=). Never the system service. Stopped at exit with the other
# RG::Fleet children.
use strict;
use warnings;
use Test::More ();
use RG::Server ();
use RG::Fleet ();

# The test is skipped (saying why) when the machine has no redis-server.
sub binary_or_skip {
    my ($bin) = grep { -x } map { "$_/redis-server" } split /:/, "$ENV{PATH}:/usr/bin:/usr/sbin";
    $bin or Test::More::plan(skip_all => 'no redis-server (scripts/setup installs it)');
    $bin;
}

# RG::Redis->start($dir, name => 'redis', password => PW): PW defaults to a fresh random one
# (and then goes to $dir/pass); a second server of the same test passes the first's.
sub start {
    my ($class, $dir, %o) = @_;
    my $bin = binary_or_skip();
    my $name = $o{name} // 'redis';
    my $password = $o{password};
    if (!defined $password) {
        $password = 'redis-pw-' . join('', map { (0 .. 9, 'a' .. 'z')[rand 36] } 1 .. 20);
        RG::Fleet::spew("$dir/pass", "$password\n");
        chmod 0600, "$dir/pass";
    }
    my $self = bless { dir => $dir, name => $name, password => $password,
                       port => RG::Server::free_port(), starts => 0 }, $class;
    mkdir "$dir/$name";
    $self->{cmd} = [$bin, '--bind', '127.0.0.1', '--port', $self->{port}, '--dir', "$dir/$name",
                    '--save', '', '--appendonly', 'no', '--requirepass', $password,
                    '--daemonize', 'no'];
    $self->restart;
}

sub port { $_[0]{port} }
sub password { $_[0]{password} }
sub address { "127.0.0.1:$_[0]{port}" }

# Starts the server again (after stop), empty: each start logs to its own file.
sub restart {
    my ($self) = @_;
    my $n = ++$self->{starts};
    my $log = "$self->{dir}/$self->{name}" . ($n > 1 ? $n : '') . '.log';
    $self->{pid} = RG::Fleet::spawn($log, qr/Ready to accept connections/, @{ $self->{cmd} });
    $self;
}

sub stop { my ($self, $sig) = @_; RG::Fleet::stop($self->{pid}, $sig // 'KILL') }

# redis-cli with the password, its output (stderr too) chomped.
sub cli {
    my ($self, @args) = @_;
    my $out = `redis-cli -h 127.0.0.1 -p $self->{port} --no-auth-warning -a '$self->{password}' @args 2>&1`;
    chomp $out;
    $out;
}

# The server's keys (SCAN, so a test never blocks Redis with KEYS).
sub scan { my ($self) = @_; grep { length } split /\n/, $self->cli('--scan') }

1;
