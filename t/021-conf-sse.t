# Streaming through the shipped config (nginx-conf/), to the mock upstream over verified TLS:
# every SSE event arrives intact and in order, and each one as soon as the upstream sends it
# (no buffering, no gzip), and a stream the upstream cuts is not passed off as complete.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use JSON::PP ();
use RG::Conf;
use RG;

repeat_each(1);
no_shuffle();
no_root_location();
add_block_preprocessor(\&RG::Conf::preprocessor);

our $TOKEN = $RG::STATIC_TOKEN;
our $STREAM = '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}';
our $TEXT = 'Hello from the relay-guard mock upstream.';
our @NAMES = (qw(message_start content_block_start ping), ('content_block_delta') x 5,
              qw(content_block_stop message_delta message_stop));

# The events of an SSE body as [name, decoded data]; dies on anything malformed.
sub events {
    my ($body) = @_;
    my @ev;
    for my $block (split /\n\n/, $body) {
        my ($name) = $block =~ /^event: (\S+)$/m or die "no event line in [$block]";
        my ($data) = $block =~ /^data: (.*)$/m or die "no data line in [$block]";
        push @ev, [$name, JSON::PP->new->decode($data)];
    }
    return @ev;
}

sub check_stream {
    my ($body, $n_deltas) = @_;
    my @ev = events($body);
    my @names = map { $_->[0] } @ev;
    my @want = (qw(message_start content_block_start ping), ('content_block_delta') x $n_deltas,
                qw(content_block_stop message_delta message_stop));
    die "event names: got [@names]" unless "@names" eq "@want";
    for (@ev) { die "type $_->[1]{type} under event $_->[0]" unless $_->[1]{type} eq $_->[0] }
    my $text = join '', map { $_->[1]{delta}{text} } grep { $_->[0] eq 'content_block_delta' } @ev;
    return $text;
}

run_tests();

# --- arrival times, against the nginx of the last block (still running) ----------------------
SKIP: {
    # Under valgrind Test::Nginx stops nginx after the last block, to collect its report.
    skip "needs the last block's nginx still running (not under valgrind)", 1
        if $ENV{TEST_NGINX_USE_VALGRIND};
    my $req = "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            . "x-api-key: $TOKEN\r\nanthropic-version: 2023-06-01\r\nAccept-Encoding: gzip\r\n"
            . "content-type: application/json\r\nx-mock-sse-gap-ms: 200\r\nx-mock-sse-events: 5\r\n"
            . "Content-Length: " . length($STREAM) . "\r\n\r\n$STREAM";
    my $res = RG::Conf::timed_request($req, timeout => 10);
    is($res->{status}, 200, 'timing: status');
    my $first = RG::Conf::arrival($res, "event: message_start\n");
    my $last = RG::Conf::arrival($res, "event: message_stop\n");
    ok(defined $first && defined $last, 'timing: first and last event seen');
    $first //= 99; $last //= 0;
    # 11 events, 10 gaps of 200 ms upstream: buffered, they would all arrive together at ~2 s.
    cmp_ok($first, '<', 0.5, "timing: first event after ${\ sprintf '%.3f', $first}s (< 0.5s)");
    cmp_ok($last - $first, '>=', 1.6, "timing: last event ${\ sprintf '%.3f', $last - $first}s after the first (>= 1.6s)");
    # Each delta arrives on its own, not in a batch with the next.
    my @delta_t = map { RG::Conf::arrival($res, "event: content_block_delta\n", $_) // 0 } 1 .. 5;
    my $spread = 1;
    for my $i (1 .. $#delta_t) { $spread = 0 if $delta_t[$i] - $delta_t[$i - 1] < 0.1 }
    ok($spread, 'timing: deltas arrive >= 100 ms apart: ' . join(' ', map { sprintf '%.2f', $_ } @delta_t));
    is($res->{headers}{'content-encoding'}, undef, 'timing: not gzipped though the client accepts gzip');
    is(check_stream($res->{body}, 5), $TEXT, 'timing: the stream is complete and intact');
}

__DATA__

=== TEST 1: a stream arrives complete, every event intact and in order
--- request eval
"POST /v1/messages\n$::STREAM"
--- more_headers eval
"x-api-key: $::TOKEN\nanthropic-version: 2023-06-01\ncontent-type: application/json\nx-mock-sse-gap-ms: 20\n"
--- error_code: 200
--- response_headers_like
Content-Type: text/event-stream; charset=utf-8
--- response_body eval: $::TEXT
--- response_body_filters eval
sub { main::check_stream($_[0], 5) }
--- no_error_log
[error]
[warn]

=== TEST 2: a long stream (2000 deltas, ~400 KB) passes byte-exact through the 8k buffer
--- request eval
"POST /v1/messages\n$::STREAM"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-sse-events: 2000\n"
--- error_code: 200
--- response_body_filters eval
sub { my $t = main::check_stream($_[0], 2000); length($t) > 10000 ? 'ok' : "short: " . length $t }
--- response_body: ok
--- no_error_log
[error]

=== TEST 3: streams are not gzipped even where gzip is on for text/event-stream at http level
--- http_config
    gzip on;
    gzip_min_length 1;
    gzip_types text/event-stream application/json;
    include relay-guard/http.conf;
    include relay-guard/upstream.conf;
--- request eval
"POST /v1/messages\n$::STREAM"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nAccept-Encoding: gzip\n"
--- error_code: 200
--- response_headers
Content-Encoding:
--- response_body_filters eval
sub { main::check_stream($_[0], 5) }
--- response_body eval: $::TEXT

=== TEST 4: an upstream that cuts the stream: the client gets what was sent, and no clean end
The chunked response ends without its last-chunk, so SDKs raise instead of returning a
truncated message as complete.
--- request eval
"POST /v1/messages\n$::STREAM"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-sse-cut: 2\n"
--- error_code: 200
--- ignore_response
--- error_log
upstream prematurely closed connection

=== TEST 5: (kept running for the timing checks after run_tests) a stream with 200 ms gaps
--- request eval
"POST /v1/messages\n$::STREAM"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-sse-gap-ms: 200\n"
--- error_code: 200
--- response_body_filters eval
sub { main::check_stream($_[0], 5) }
--- response_body eval: $::TEXT
