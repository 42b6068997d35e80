# How streams end, and what is counted when they end badly (issue 12): a stream the upstream
# cuts, one whose client leaves, and one with `event: error` after the 200 are each counted
# under their outcome, with the tokens seen so far (a lower bound of what Anthropic bills);
# error events by error type; the models= bound; and two keys streaming at once never mix.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use RG;
use RG::Server;
use RG::Metrics qw();
use RG::Usage qw();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
$ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';

my $srv = RG::Server->new(name => 'usage-outcomes', workers => 2);
$srv->start(RG::Usage::http_conf($srv->root));
my $workers = RG::Usage::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
*check = \&RG::Usage::check;
*log_of = \&RG::Usage::log_of;
*usage_json = \&RG::Usage::usage_json;

my %start = (input => 500, output => 1, cache_write_5m => 600, cache_write_1h => 700, cache_read => 800);
my $delta = '{"output_tokens":900}';

sub stream {
    my (%o) = @_;
    return RG::Usage::messages($srv, stream => 1, %o,
                               mock => { 'x-mock-sse-gap-ms' => 0, 'x-mock-usage' => usage_json(%start),
                                         'x-mock-usage-delta' => $delta, %{ $o{mock} || {} } });
}

subtest 'upstream cuts: the tokens of message_start are counted, as upstream_cut' => sub {
    for my $path ('/v1/messages', '/buffered/v1/messages') {
        my $b = snap();
        my $r = stream(path => $path, mock => { 'x-mock-sse-cut' => 2 });
        unlike(RG::Metrics::dechunk($r), qr/event: message_(delta|stop)/, "$path: cut before message_delta");
        check($srv, $b, $r, "$path, cut after 2 deltas", %start, stream => 'upstream_cut',
              log => log_of(%start, stream => 'upstream_cut'));
    }
    # Cut after message_delta but before message_stop: both events' usage, merged.
    my $raw = RG::Usage::sse([message_start => RG::Usage::message_start(usage_json(%start))],
                             [content_block_delta => RG::Usage::text_delta('Hi')],
                             [message_delta => RG::Usage::message_delta($delta)]);
    my %m = (%start, output => 900);
    for my $cut (0, 1) {
        my $name = $cut ? 'connection dropped after message_delta' : 'ended cleanly without message_stop';
        my $b = snap();
        my $r = stream(mock => { 'x-mock-raw-sse' => RG::Usage::b64($raw), $cut ? ('x-mock-sse-cut' => 0) : () });
        like(RG::Metrics::dechunk($r), qr/event: message_delta/, "$name: message_delta reached the client");
        check($srv, $b, $r, $name, %m, stream => 'upstream_cut', log => log_of(%m, stream => 'upstream_cut'));
    }
    my $b = snap();
    my $r = stream(path => '/off/v1/messages', mock => { 'x-mock-sse-cut' => 2 });
    check($srv, $b, $r, 'relay_guard_accounting off, cut', stream => 'upstream_cut',
          log => { in => '-', out => '-', stream => 'upstream_cut' });
};

subtest 'clients that leave mid-stream: tokens so far, as client_abort' => sub {
    for my $path ('/v1/messages', '/buffered/v1/messages') {
        my $b = snap();
        # Ten deltas 200 ms apart: the client reads the first, then closes; message_delta
        # would only come two seconds later.
        my ($s, $tag) = RG::Usage::open_request($srv, path => $path, stream => 1,
            mock => { 'x-mock-sse-gap-ms' => 200, 'x-mock-sse-events' => 10,
                      'x-mock-usage' => usage_json(%start), 'x-mock-usage-delta' => $delta });
        my $got = RG::Usage::read_until($s, qr/event: content_block_delta/, 10);
        like($got, qr/event: message_start.*event: content_block_delta/s, "$path: read message_start and a delta");
        close $s;
        check($srv, $b, { tag => $tag }, "$path, client left", %start, stream => 'client_abort',
              log => log_of(%start, stream => 'client_abort'));
    }
};

subtest '`event: error` after the 200: error_event, its type, and the tokens so far' => sub {
    my @types = qw(invalid_request_error authentication_error billing_error permission_error not_found_error
                   request_too_large rate_limit_error timeout_error api_error overloaded_error);
    for my $t (@types, 'brand_new_error') {
        my $label = $t eq 'brand_new_error' ? 'other' : $t;
        my $b = snap();
        my $r = stream(mock => { 'x-mock-sse-error' => 1, 'x-mock-sse-error-type' => $t });
        like(RG::Metrics::dechunk($r), qr/event: error\ndata: \{"type":"error","error":\{"type":"$t"/,
             "$t: the error event reached the client");
        check($srv, $b, $r, "error $t", %start, stream => 'error_event', error_type => $label,
              log => log_of(%start, stream => 'error_event'));
    }
    # The default error event (overloaded_error), and one after message_delta with message_stop
    # following: the turn failed, so error_event wins, with the merged usage.
    my $b = snap();
    my $r = stream(mock => { 'x-mock-sse-error' => 1 });
    check($srv, $b, $r, 'default error event', %start, stream => 'error_event', error_type => 'overloaded_error',
          log => log_of(%start, stream => 'error_event'));
    my $raw = RG::Usage::sse([message_start => RG::Usage::message_start(usage_json(%start))],
                             [message_delta => RG::Usage::message_delta($delta)],
                             [error => '{"type":"error","error":{"type":"api_error","message":"x"}}'],
                             [message_stop => '{"type":"message_stop"}']);
    $b = snap();
    $r = stream(mock => { 'x-mock-raw-sse' => RG::Usage::b64($raw) });
    my %m = (%start, output => 900);
    check($srv, $b, $r, 'error then message_stop', %m, stream => 'error_event', error_type => 'api_error',
          log => log_of(%m, stream => 'error_event'));
};

subtest 'two keys streaming at the same time never mix' => sub {
    my %u = (alice => { input => 11, output => 1, cache_read => 12 },
             'team-a' => { input => 21, output => 1, cache_write_1h => 22 },
             bob => { input => 31, output => 1, cache_write_5m => 32 });
    my %d = (alice => 13, 'team-a' => 23, bob => 33);
    my $b = snap();
    my %open;
    for my $round (1 .. 3) {
        for my $k (sort keys %u) {
            my ($s, $tag) = RG::Usage::open_request($srv, key => $k, stream => 1,
                mock => { 'x-mock-sse-gap-ms' => 30, 'x-mock-sse-events' => 8,
                          'x-mock-usage' => usage_json(%{ $u{$k} }),
                          'x-mock-usage-delta' => qq({"output_tokens":$d{$k}}) });
            push @{ $open{$k} }, [$s, $tag];
        }
    }
    for my $k (sort keys %open) {
        for my $o (@{ $open{$k} }) {
            like(RG::Usage::read_until($o->[0], qr/0\r\n\r\n\z/, 10), qr/event: message_stop/, "$k: stream complete");
            ok(RG::Usage::log_line($srv, $o->[1]), "$k: logged");
        }
    }
    my $got = RG::Usage::changes($b, snap());
    my %want;
    for my $k (keys %u) {
        my %x = (%{ $u{$k} }, output => $d{$k});
        my $w = RG::Usage::want(key => $k, map({ $_ => 3 * $x{$_} } keys %x), responses => 3);
        $w->{qq{relay_guard_streams_total{key="$k",outcome="completed"}}} = 3;
        %want = (%want, %$w);
    }
    is_deeply($got, \%want, 'nine interleaved streams: each key exactly its own three') or diag(explain($got));
};

subtest 'models=2: two models get series, a third and later share model="other"' => sub {
    my $m2 = RG::Server->new(name => 'usage-models2', workers => 2);
    $m2->start(RG::Usage::http_conf($m2->root, zone_args => 'models=2'));
    my $n = 0;
    my $one = sub {
        my ($model, $want_label, %o) = @_;
        my $b = RG::Metrics::snap($m2);
        my $r = RG::Usage::messages($m2, mock => { 'x-mock-usage' => usage_json(input => 3, output => 4),
                                                   defined $model ? ('x-mock-model' => $model) : () }, %o);
        $n++;
        check($m2, $b, $r, "$n: model " . ($model // 'default'), model => $want_label, input => 3, output => 4,
              key => $o{key} // 'team-a',
              log => log_of(input => 3, output => 4, model => $want_label eq 'other' ? $model : $want_label));
    };
    my $raw = '{"type":"message","role":"assistant","content":[],"usage":{"input_tokens":3,"output_tokens":4}}';
    my $b = RG::Metrics::snap($m2);
    my $r = RG::Usage::messages($m2, mock => { 'x-mock-raw-body' => RG::Usage::b64($raw) });
    check($m2, $b, $r, 'no model first (takes no slot)', model => '-', input => 3, output => 4,
          log => log_of(input => 3, output => 4, model => '-'));
    $one->('claude-a-1', 'claude-a-1');
    $one->('claude-b-2', 'claude-b-2', key => 'alice');
    $one->('claude-c-3', 'other');
    $one->('claude-d-4', 'other', key => 'bob');
    $one->('claude-a-1', 'claude-a-1', key => 'bob');
    $one->('claude-b-2', 'claude-b-2');
    $one->('claude-c-3', 'other', key => 'alice');
    my %models = map { /model="([^"]*)"/ ? ($1 => 1) : () } keys %{ RG::Metrics::snap($m2) };
    is_deeply([sort keys %models], [sort qw(- claude-a-1 claude-b-2 other)], 'no other model label exists');
    $m2->reload;
    $b = RG::Metrics::snap($m2);
    $one->('claude-e-5', 'other');
    $one->('claude-b-2', 'claude-b-2');
    $m2->stop;
};

RG::Usage::no_crash($srv, $workers, 'after all');
$srv->stop;
done_testing();
