# Per-key token budgets per window (issue 13): counted tokens = input + cache writes (5m and
# 1h) + output, cache reads not counted; a request is refused once used >= budget in the
# current window (windows aligned to multiples of their length since the epoch), the charge
# comes in the LOG phase with the tokens of that response (a cut stream: the tokens seen), so
# requests admitted together may overshoot. retry-after is the time until the refusing window
# ends, and a new window admits again. 5-second windows keep the waiting short: the test
# starts right after a window boundary, does its checks inside that window, then waits for the
# next one. The mock sends the usage (x-mock-usage, x-mock-usage-delta).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp ();
use POSIX ();
use Time::HiRes qw(sleep time);
use RG;
use RG::Server;
use RG::Metrics ();
use RG::Usage ();
use RG::Limits ();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';

my $W = 5;
my $dir = File::Temp::tempdir('rg-limits-tok-XXXXXX', TMPDIR => 1, CLEANUP => 1);
sub budget { my ($n, $per) = @_; { budget => $n, per => $per // "${W}s" } }
RG::Limits::write_keys("$dir/keys.json", keys => [
    t190    => { tokens => budget(190) },
    t191    => { tokens => budget(191) },
    tcount  => { tokens => budget(100000) },
    'two-a' => { tokens => [budget(1000), budget(300, '1d')] },
    'two-b' => { tokens => [budget(150), budget(100000, '1d')] },
    tover   => { tokens => budget(100, '1d') },
    tzero   => { tokens => budget(1, '1d') },
    tstream => { tokens => budget(1000, '1d') },
    tcut    => { tokens => budget(1000, '1d') },
    tabort  => { tokens => budget(1000, '1d') },
    tdry    => { tokens => budget(50, '1d') },
    toff    => { tokens => budget(50, '1d') },
    alice   => { tokens => budget(10, '1d') },
    tord    => { tokens => budget(1, '1d'), requests_per_minute => 6, burst => 1 },
]);

my $srv = RG::Server->new(name => 'limits-tokens', workers => 2);
$srv->start(RG::Limits::http_conf(keys => "$dir/keys.json"));
RG::Limits::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
*refused = \&RG::Limits::refused;
*admitted = \&RG::Limits::admitted;

# 100 input + 20 + 30 cache writes + 40 output = 190 counted; the 5000 cache reads are not.
my $U = RG::Usage::usage_json(input => 100, cache_write_5m => 20, cache_write_1h => 30, output => 40,
                              cache_read => 5000);
sub send_as { my ($key, %o) = @_; RG::Limits::messages($srv, key => $key, inflight => $key, %o) }

sub window { RG::Limits::token_window($srv, @_) }

sub used_is { RG::Limits::used_is($srv, @_) }

my $midnight = sub { (POSIX::floor(time / 86400) + 1) * 86400 };

my $b0 = snap();
my $A = RG::Limits::align($W);
subtest "inside one ${W}s window: counting, refusal at the budget, two windows at once" => sub {
    admitted($srv, send_as($_, usage => $U), "$_: first request (190 counted)") for qw(t190 t191 tcount two-a two-b);
    used_is($_, "${W}s", 190, 'input + cache writes + output, not cache reads') for qw(t190 t191 tcount two-a two-b);
    my $ra = refused($srv, send_as('t190'), 'tokens', 't190 (used 190 >= budget 190)', min => 1, max => $W);
    cmp_ok(abs($ra - POSIX::ceil($A + $W - time)), '<=', 1, "retry-after $ra: until the window ends");
    admitted($srv, send_as('t191', usage => $U), 't191 (used 190 < budget 191): admitted');
    is_deeply(window('tcount', "${W}s"),
              { per => "${W}s", budget => 100000, used => 190, remaining => 99810,
                window_start => RG::Limits::iso($A), resets_at => RG::Limits::iso($A + $W) },
              'usage of tcount: the window aligned to a multiple of 5 s since the epoch');
    # two-a: the 1d window (300) binds after two requests; two-b: the 5 s window (150) at once.
    admitted($srv, send_as('two-a', usage => $U), 'two-a second request (1d: 190 < 300)');
    used_is('two-a', '1d', 380, 'two windows charged together');
    used_is('two-a', "${W}s", 380, 'two windows charged together');
    $ra = refused($srv, send_as('two-a'), 'tokens', 'two-a (1d window spent)', min => $W + 1);
    cmp_ok(abs($ra - POSIX::ceil($midnight->() - time)), '<=', 1, "retry-after $ra: until the 1d window ends (00:00 UTC)");
    refused($srv, send_as('two-b'), 'tokens', 'two-b (5 s window spent)', min => 1, max => $W);
    is((window('two-b', '1d') || {})->{used}, 190, 'two-b: the 1d window charged too');
    cmp_ok(time, '<', $A + $W - 0.1, "all of it inside one ${W}s window (else this machine is too slow for the test)");
};

subtest 'the next window admits again' => sub {
    my $now = time;
    sleep($A + $W + 0.1 - $now) if $now < $A + $W + 0.1;
    my $start = POSIX::floor(time / $W) * $W;
    my $w = window('tcount', "${W}s");
    is_deeply($w && [@$w{qw(used remaining window_start resets_at)}],
              [0, 100000, RG::Limits::iso($start), RG::Limits::iso($start + $W)], 'tcount: a fresh window, used 0');
    admitted($srv, send_as('t190', usage => $U), 't190: admitted in the new window');
    admitted($srv, send_as('two-b'), 'two-b: the 5 s window turned, the 1d one has room');
    refused($srv, send_as('two-a'), 'tokens', 'two-a: still refused by its 1d window', min => $W + 1);
};

subtest 'admitted while under the budget, charged on completion: the overshoot is the requests in flight' => sub {
    my @h = map { RG::Limits::open_request($srv, key => 'tover', usage => '{"input_tokens":100,"output_tokens":0}',
                                           mock => { 'x-mock-delay-ms' => 600 }) } 1 .. 3;
    admitted($srv, RG::Limits::finish($_), 'tover: one of three admitted together (used 0 < 100)') for @h;
    used_is('tover', '1d', 300, 'all three charged');
    is((window('tover', '1d') || {})->{remaining}, 0, 'remaining 0 (never negative)');
    my $r = send_as('tover');
    my $left = $midnight->() - time;
    my $ra = refused($srv, $r, 'tokens', 'tover after the overshoot');
    is($r->{headers}{'x-should-retry'}, 'false', 'x-should-retry false: the day ends in more than 60 s') if $left > 62;
};

subtest 'what is charged: a response without usage, an error, a single token' => sub {
    admitted($srv, send_as('tzero', usage => 'none'), "tzero: no usage object, request $_") for 1 .. 3;
    is(send_as('tzero', mock => { 'x-mock-status' => 500 })->{status}, 500, 'tzero: upstream 500 relayed');
    used_is('tzero', '1d', 0, 'nothing counted');
    admitted($srv, send_as('tzero', usage => '{"input_tokens":0,"output_tokens":1}'), 'tzero: one output token');
    used_is('tzero', '1d', 1, 'one token counted');
    refused($srv, send_as('tzero'), 'tokens', 'tzero with used 1 >= budget 1');
};

subtest 'streams: the merged usage; a cut stream the tokens seen' => sub {
    my $r = send_as('tstream', stream => 1, usage => '{"input_tokens":500,"output_tokens":1}',
                    mock => { 'x-mock-usage-delta' => '{"output_tokens":600}', 'x-mock-sse-gap-ms' => 0 });
    admitted($srv, $r, 'tstream: a stream');
    like($r->{body}, qr/event: message_stop/, 'complete');
    used_is('tstream', '1d', 1100, 'message_start input 500 + message_delta output 600');
    refused($srv, send_as('tstream'), 'tokens', 'tstream over its budget');
    $r = send_as('tcut', stream => 1, usage => '{"input_tokens":300,"output_tokens":1}',
                 mock => { 'x-mock-sse-cut' => 1, 'x-mock-sse-gap-ms' => 0 });
    unlike($r->{body}, qr/message_delta/, 'tcut: the upstream cut the stream before message_delta');
    used_is('tcut', '1d', 301, 'the tokens seen: 300 input + 1 output');
    # The client leaves after the first delta; message_delta would come 2 s later.
    my $o = RG::Limits::open_request($srv, key => 'tabort', stream => 1, usage => '{"input_tokens":400,"output_tokens":1}',
                                     mock => { 'x-mock-sse-gap-ms' => 200, 'x-mock-sse-events' => 10,
                                               'x-mock-usage-delta' => '{"output_tokens":900}' });
    like(RG::Usage::read_until($o->{sock}, qr/event: content_block_delta/, 5), qr/event: message_start/, 'tabort: read message_start');
    close $o->{sock};
    used_is('tabort', '1d', 401, 'a client that left: the tokens seen, 400 input + 1 output');
};

subtest 'dry run and relay_guard_limits off' => sub {
    my $b = snap();
    admitted($srv, send_as('tdry', path => '/dry/v1/messages', usage => '{"input_tokens":50,"output_tokens":0}'),
             'tdry: dry run, first', 'DRY_RUN_OK');
    used_is('tdry', '1d', 50, 'charged in a dry-run location');
    my $r = send_as('tdry', path => '/dry/v1/messages');
    is($r->{status}, 200, 'tdry over its budget: relayed');
    is(RG::Limits::rg_status($srv, $r), 'DRY_RUN_LIMIT_TOKENS', '$relay_guard_status DRY_RUN_LIMIT_TOKENS');
    is(RG::Limits::mock_inflight('tdry')->{total}, 2, 'the upstream saw both');
    is(RG::Limits::limited(snap(), 'tdry', 'tokens') - RG::Limits::limited($b, 'tdry', 'tokens'), 1,
       'relay_guard_limited_total{key="tdry",limit="tokens"} += 1');
    admitted($srv, send_as('toff', path => '/nolimits/v1/messages', usage => '{"input_tokens":50,"output_tokens":0}'),
             "toff: limits off, request $_") for 1 .. 2;
    used_is('toff', '1d', 0, 'nothing charged where limits are off');
    admitted($srv, send_as('toff', usage => '{"input_tokens":50,"output_tokens":0}'), 'toff in an enforcing location');
    used_is('toff', '1d', 50, 'charged there');
    refused($srv, send_as('toff'), 'tokens', 'toff then refused');
};

subtest 'order: tokens before rpm' => sub {
    admitted($srv, send_as('tord', usage => '{"input_tokens":1,"output_tokens":0}'), 'tord: its one request and its one token');
    used_is('tord', '1d', 1, 'tord');
    # Both limits refuse now; tokens are checked first.
    refused($srv, send_as('tord'), 'tokens', 'tord: tokens and rpm both spent');
};

subtest 'signed keys; the info log line names tokens; the counter' => sub {
    my $from = length $srv->error_log;
    admitted($srv, send_as('alice', usage => '{"input_tokens":10,"output_tokens":0}'), 'alice (signature)');
    used_is('alice', '1d', 10, 'alice');
    refused($srv, send_as('alice'), 'tokens', 'alice over budget');
    is(RG::Limits::refusal_lines(substr($srv->error_log, $from), 'alice', 'tokens'), 1,
       'one info line: relay_guard: key "alice" refused: tokens limit');
    my $a = snap();
    my %want = (t190 => 1, 'two-a' => 2, 'two-b' => 1, tover => 1, tzero => 1, tstream => 1, tdry => 1, toff => 1, alice => 1, tord => 1);
    my %got = map { $_ => RG::Limits::limited($a, $_, 'tokens') - RG::Limits::limited($b0, $_, 'tokens') } keys %want;
    is_deeply(\%got, \%want, 'relay_guard_limited_total{limit="tokens"}: each refusal under its key');
    is(RG::Limits::limited($a, $_, 'rpm') + RG::Limits::limited($a, $_, 'concurrency'), 0, "$_: no other limit counted")
        for sort keys %want;
};

RG::Limits::no_crash($srv, 'after all');
$srv->stop;
done_testing();
