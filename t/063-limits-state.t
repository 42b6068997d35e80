# Limits state that lasts (issue 13): counters live in the shared zone and survive
# `nginx -s reload`, also when the keys file changes (keys that remain keep theirs, matched by
# id, not by position); relay_guard_state_file writes the token windows every INTERVAL and at
# shutdown (QUIT and TERM), atomically, in the documented format, and a start reads them back.
# A corrupt, foreign, truncated or unreadable file gives a warning naming the file and empty
# windows, and nginx starts; a saved window that has ended restores nothing. The state file
# lives outside the server root, which RG::Server::start wipes; restarts keep the prefix.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use POSIX qw(floor);
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

# The 1d and 7d windows (both turn at 00:00 UTC) must not turn while the test runs.
for my $per (86400) {
    my $left = (floor(time / $per) + 1) * $per - time;
    sleep($left + 0.2) if $left < 60;
}

my $dir = File::Temp::tempdir('rg-limits-state-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $sdir = "$dir/state";
mkdir $sdir or die "$sdir: $!";
my $file = "$sdir/state.json";
my $keys = "$dir/keys.json";
sub budget { { budget => $_[0], per => $_[1] } }
my %lim = (
    sd   => { tokens => budget(1000, '1d'), requests_per_minute => 6, burst => 2 },
    sh   => { tokens => [budget(500, '7d'), budget(5000, '1d')] },
    keep => { tokens => budget(1000, '1d') },
    gone => { tokens => budget(1000, '1d') },
    full => { tokens => budget(100, '1d') },
    newk => { tokens => budget(1000, '1d') },
);
RG::Limits::write_keys($keys, keys => [map { $_ => $lim{$_} } qw(sd sh keep gone full)]);

my $srv = RG::Server->new(name => 'limits-state', workers => 2);
my $conf = sub { RG::Limits::http_conf(keys => $keys, state => "$file $_[0]") };
$srv->start($conf->('1s'));
RG::Limits::workers($srv, 2);

*refused = \&RG::Limits::refused;
*admitted = \&RG::Limits::admitted;
sub usage_of { my ($n) = @_; qq({"input_tokens":$n,"output_tokens":0}) }
sub send_as { my ($key, %o) = @_; RG::Limits::messages($srv, key => $key, %o) }

sub window { RG::Limits::token_window($srv, @_) }

sub used_is { RG::Limits::used_is($srv, @_) }

sub read_state {
    my $text = RG::Limits::slurp($file) // return undef;
    return eval { $RG::Limits::JSON->decode($text) };
}

# The saved window of $key with per_s $per in a parsed state file, or undef.
sub saved {
    my ($doc, $key, $per) = @_;
    return undef unless ref $doc eq 'HASH' && ref $doc->{keys} eq 'HASH' && ref $doc->{keys}{$key} eq 'ARRAY';
    my ($w) = grep { ref $_ eq 'HASH' && ($_->{per_s} // 0) == $per } @{ $doc->{keys}{$key} };
    return $w;
}

# A valid state file's content (as the spec's format) with the given windows: key => [[per_s,
# window index, used]...].
sub state_text {
    my (%keys) = @_;
    return $RG::Limits::JSON->encode({ format => 'relay-guard-limits-state', version => 1, saved_at => int(time),
        keys => { map { my $k = $_; ($k => [map { { per_s => $_->[0], window => $_->[1], used => $_->[2] } } @{ $keys{$k} }]) } keys %keys } });
}
sub day { floor(time / 86400) }
sub week { floor(time / 604800) }

subtest 'a reload keeps tokens and rpm state' => sub {
    admitted($srv, send_as('sd', usage => usage_of(300)), 'sd: 300 tokens');
    admitted($srv, send_as('sd', usage => 'none'), 'sd: second request of the burst of 2');
    refused($srv, send_as('sd'), 'rpm', 'sd: third');
    admitted($srv, send_as('sh', usage => usage_of(120)), 'sh: 120 tokens');
    admitted($srv, send_as('keep', usage => usage_of(250)), 'keep: 250 tokens');
    admitted($srv, send_as('gone', usage => usage_of(400)), 'gone: 400 tokens');
    admitted($srv, send_as('full', usage => usage_of(100)), 'full: its whole budget');
    used_is('full', '1d', 100, 'before the reload');
    used_is('gone', '1d', 400, 'before the reload');
    $srv->reload;
    used_is('sd', '1d', 300, 'after the reload');
    used_is('sh', '7d', 120, 'after the reload');
    used_is('sh', '1d', 120, 'after the reload');
    refused($srv, send_as('sd'), 'rpm', 'sd after the reload: the rpm state kept', max => 10);
    refused($srv, send_as('full'), 'tokens', 'full after the reload');
};

subtest 'a keys-file change on reload keeps the counters of keys that remain (by id)' => sub {
    # Reordered, "gone" removed, "newk" added in front (where sd was).
    RG::Limits::write_keys($keys, keys => [map { $_ => $lim{$_} } qw(newk full keep sh sd)]);
    $srv->reload;
    used_is('keep', '1d', 250, 'after the keys change');
    used_is('sd', '1d', 300, 'after the keys change');
    used_is('sh', '7d', 120, 'after the keys change');
    used_is('newk', '1d', 0, 'a new key starts empty');
    refused($srv, send_as('full'), 'tokens', 'full still spent');
    is(send_as('gone')->{status}, 401, 'the removed key is refused as unknown');
};

subtest 'the state file: written every interval, in the documented format' => sub {
    my $doc;
    RG::Limits::wait_until(sub { $doc = read_state(); my $w = saved($doc, 'keep', 86400); $w && $w->{used} == 250 }, 3);
    ok(ref $doc eq 'HASH', 'state file written and valid JSON') or diag(RG::Limits::slurp($file) // 'no file');
    $doc = {} unless ref $doc eq 'HASH';
    is($doc->{format}, 'relay-guard-limits-state', 'format');
    is($doc->{version}, 1, 'version 1');
    cmp_ok(abs(($doc->{saved_at} // 0) - time), '<=', 5, 'saved_at: Unix seconds, now');
    is_deeply(saved($doc, 'keep', 86400), { per_s => 86400, window => day(), used => 250 }, 'keep: the 1d window, floor(t/86400)');
    is_deeply(saved($doc, 'sd', 86400), { per_s => 86400, window => day(), used => 300 }, 'sd');
    is_deeply(saved($doc, 'sh', 604800), { per_s => 604800, window => week(), used => 120 }, 'sh: the 7d window');
    is_deeply(saved($doc, 'sh', 86400), { per_s => 86400, window => day(), used => 120 }, 'sh: the 1d window');
    admitted($srv, send_as('keep', usage => usage_of(50)), 'keep: 50 more');
    ok(RG::Limits::wait_until(sub { my $w = saved(read_state(), 'keep', 86400); $w && $w->{used} == 300 }, 3),
       'the file follows within the 1 s interval (keep 300)');
};

subtest 'stop (QUIT) and start: the windows come back' => sub {
    RG::Limits::stop_with($srv, 'QUIT');
    opendir my $d, $sdir or die $!;
    my @left = sort grep { !/^\.\.?$/ } readdir $d;
    is_deeply(\@left, ['state.json'], 'only state.json in its directory (the temp file was renamed)');
    my $from = length $srv->error_log;
    RG::Limits::restart($srv);
    used_is('keep', '1d', 300, 'after the restart');
    used_is('sd', '1d', 300, 'after the restart');
    used_is('sh', '7d', 120, 'after the restart');
    used_is('sh', '1d', 120, 'after the restart');
    refused($srv, send_as('full'), 'tokens', 'full: still spent after the restart');
    unlike(substr($srv->error_log, $from), qr/starting with empty windows/, 'no warning for a good file');
};

subtest 'stop (TERM): the master writes the file at shutdown; a reload does not read it' => sub {
    # A 1 d interval: only the shutdown write can save what happens now.
    $srv->write_conf($conf->('1d'));
    $srv->reload;
    admitted($srv, send_as('keep', usage => usage_of(50)), 'keep: 50 more');
    used_is('keep', '1d', 350, 'running');
    # The file is read when the zone is created, not on reload.
    RG::Limits::spew($file, state_text(keep => [[86400, day(), 999]]));
    $srv->reload;
    used_is('keep', '1d', 350, 'a reload after the file changed');
    RG::Limits::stop_with($srv, 'TERM');
    is((saved(read_state(), 'keep', 86400) || {})->{used}, 350, 'the file holds 350 after TERM');
    RG::Limits::restart($srv);
    used_is('keep', '1d', 350, 'after TERM and a start');
};

subtest 'corrupt, foreign or unreadable state files: a warning, empty windows, nginx starts' => sub {
    # Each file holds real windows (sd 300, keep 250 today) but must be refused whole.
    my $good = state_text(sd => [[86400, day(), 300]], keep => [[86400, day(), 250]]);
    my $foreign = $good =~ s/"relay-guard-limits-state"/"nginx-limit-req-state"/r;
    my $v2 = $good =~ s/"version":1\b/"version":2/r;
    my $cut = index($good, ',"saved_at"');
    die 'state_text lost its saved_at' if $cut < 0;
    my @cases = (
        ['not JSON', "\x00\xffrelay-guard {\"keys\""],
        ['an empty file', ''],
        ['another format', $foreign],
        ['version 2', $v2],
        ['truncated after the windows', substr($good, 0, $cut)],
        ['bytes after the document', "$good\n{}"],
        ['a JSON array', '[1,2,3]'],
        ['a directory', undef],
    );
    for my $c (@cases) {
        my ($name, $text) = @$c;
        RG::Limits::stop_with($srv, 'QUIT');
        unlink $file;
        if (defined $text) { RG::Limits::spew($file, $text) } else { mkdir $file or die "$file: $!" }
        my $from = length $srv->error_log;
        my $ok = eval { RG::Limits::restart($srv); 1 };
        ok($ok, "$name: nginx starts") or do { diag($@); next };
        my $log = substr($srv->error_log, $from);
        like($log, qr/^[^\n]*\[warn\][^\n]*\Q$file\E[^\n]*$/m, "$name: a warning naming the file");
        like($log, qr/^[^\n]*\[warn\][^\n]*starting with empty windows[^\n]*$/m, "$name: ... saying \"starting with empty windows\"");
        used_is('sd', '1d', 0, "$name: empty windows");
        used_is('keep', '1d', 0, "$name: empty windows");
        admitted($srv, send_as('full'), "$name: full admitted again");
        rmdir $file unless defined $text;
    }
};

subtest 'a saved window that has ended restores nothing' => sub {
    RG::Limits::stop_with($srv, 'QUIT');
    RG::Limits::spew($file, state_text(
        sd       => [[86400, day() - 1, 900]],                  # yesterday
        keep     => [[86400, day(), 250], [3600, floor(time / 3600), 999]],  # keep has no 1h window
        sh       => [[604800, week() - 1, 499], [86400, day(), 123]],
        stranger => [[86400, day(), 5]],                         # not in the keys file
    ));
    RG::Limits::restart($srv);
    used_is('sd', '1d', 0, 'a window of yesterday');
    used_is('keep', '1d', 250, 'a current window');
    used_is('sh', '7d', 0, 'last week\'s window');
    used_is('sh', '1d', 123, 'the same key\'s current day');
    is(scalar(grep { ($_->{per} // '') ne '1d' } @{ (RG::Limits::usage_quiet($srv, 'keep') || {})->{tokens} || [] }), 0,
       'keep: no window it does not have');
    admitted($srv, send_as('keep', usage => usage_of(1)), 'keep admitted');
};

# The directory in place of the state file may make a write fail loudly: that is allowed.
RG::Limits::no_crash($srv, 'after all', 0, qr/\Q$file\E/);
$srv->stop;
done_testing();
