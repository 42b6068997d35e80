# Usage accounting of SSE streams (issue 12): message_start.message.usage merged field by field
# with every message_delta.usage (a later field replaces an earlier one; message_delta is
# cumulative, never summed), counted exactly per key and model, with the stream's outcome, in
# the metrics and the access log; events split across buffers at any byte (the mock writes the
# stream in N-byte chunks); streams nginx spools to temp files (proxy_buffering on, slow client).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use RG;
use RG::Server;
use RG::Metrics qw();
use RG::Usage qw();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
$ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';

my $srv = RG::Server->new(name => 'usage-sse', workers => 2);
$srv->start(RG::Usage::http_conf($srv->root));
my $workers = RG::Usage::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
*check = \&RG::Usage::check;
*log_of = \&RG::Usage::log_of;
*usage_json = \&RG::Usage::usage_json;

sub stream {
    my (%o) = @_;
    my $r = RG::Usage::messages($srv, stream => 1, %o,
                                mock => { 'x-mock-sse-gap-ms' => 0, %{ $o{mock} || {} } });
    is($r->{status}, 200, 'stream: 200');
    like($r->{headers}{'content-type'}, qr{^text/event-stream}, '... an event stream');
    return $r;
}

# What Anthropic sends: input and cache counts in message_start (output_tokens 1 there), the
# final output count and web searches in message_delta.
my %start = (input => 2345, output => 1, cache_write_5m => 6789, cache_write_1h => 1011, cache_read => 121314);
my $delta = '{"output_tokens":1516,"server_tool_use":{"web_search_requests":4}}';
my %merged = (%start, output => 1516, web_search => 4);

subtest 'Anthropic shape: usage split across message_start and message_delta' => sub {
    for my $key (qw(team-a alice bob)) {
        my $b = snap();
        my $r = stream(key => $key, mock => { 'x-mock-usage' => usage_json(%start), 'x-mock-usage-delta' => $delta,
                                              'x-mock-model' => 'claude-opus-4-1' });
        like($r->{decoded}, qr/event: message_stop/, "$key: the client got the whole stream");
        check($srv, $b, $r, $key, key => $key, model => 'claude-opus-4-1', %merged, stream => 'completed',
              log => { %{ log_of(%merged, model => 'claude-opus-4-1', stream => 'completed') }, key => $key });
    }
};

subtest 'the mock default stream' => sub {
    my $b = snap();
    my $r = stream(mock => { 'x-mock-sse-events' => 9 });
    like($r->{decoded}, qr/"usage":\{"input_tokens":8,.*"output_tokens":1,/, 'message_start: input 8, output 1');
    like($r->{decoded}, qr/"usage":\{"output_tokens":9\}/, 'message_delta: output 9');
    check($srv, $b, $r, 'default', input => 8, output => 9, stream => 'completed',
          log => log_of(input => 8, output => 9, stream => 'completed'));
};

subtest 'usage only in message_delta (compatible upstreams), or only in message_start' => sub {
    my %all = (input => 31, output => 32, cache_write_5m => 33, cache_write_1h => 34, cache_read => 35, web_search => 2);
    my $b = snap();
    my $r = stream(mock => { 'x-mock-usage' => 'none', 'x-mock-usage-delta' => usage_json(%all) });
    unlike($r->{decoded} =~ s/event: message_delta.*//sr, qr/usage/, 'message_start had no usage');
    check($srv, $b, $r, 'only in message_delta', %all, stream => 'completed',
          log => log_of(%all, stream => 'completed'));

    $b = snap();
    $r = stream(mock => { 'x-mock-usage' => usage_json(%all), 'x-mock-usage-delta' => 'none' });
    check($srv, $b, $r, 'only in message_start', %all, stream => 'completed',
          log => log_of(%all, stream => 'completed'));

    # message_delta repeats input and cache counts with new values: the later ones win.
    my %later = (input => 41, output => 42, cache_read => 45);
    $b = snap();
    $r = stream(mock => { 'x-mock-usage' => usage_json(%all), 'x-mock-usage-delta' => usage_json(%later) });
    my %want = (%all, %later);
    check($srv, $b, $r, 'message_delta replaces what it repeats, keeps the rest', %want, stream => 'completed',
          log => log_of(%want, stream => 'completed'));

    $b = snap();
    $r = stream(mock => { 'x-mock-usage' => 'none', 'x-mock-usage-delta' => 'none' });
    check($srv, $b, $r, 'no usage anywhere', stream => 'completed',
          log => { in => '-', out => '-', cr => '-', cw => '-', model => 'claude-sonnet-4-5', stream => 'completed' });
};

subtest 'many message_delta events: cumulative, so the last one counts, not the sum' => sub {
    my $raw = RG::Usage::sse(
        [message_start => RG::Usage::message_start('{"input_tokens":10,"output_tokens":1}')],
        (map { ([content_block_delta => RG::Usage::text_delta("w$_")],
                [message_delta => RG::Usage::message_delta(qq({"output_tokens":$_}))]) } 1 .. 50),
        [message_stop => '{"type":"message_stop"}']);
    my $b = snap();
    my $r = stream(mock => { 'x-mock-raw-sse' => RG::Usage::b64($raw) });
    is($r->{decoded}, $raw, 'the client got the stream unchanged');
    check($srv, $b, $r, '50 deltas', input => 10, output => 50, stream => 'completed',
          log => log_of(input => 10, output => 50, stream => 'completed'));
};

# The mock itself, asked directly: x-mock-sse-split really writes N-byte chunks. nginx's chunked
# parser hands the body filter one buffer per chunk, so the scanner sees the same pieces.
sub mock_chunk_sizes {
    my ($split) = @_;
    my $body = RG::Usage::body(stream => 1);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_MOCK_PORT}, Timeout => 10)
        or die "mock: $!";
    print $s "POST /v1/messages HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nx-mock-sse-split: $split\r\n"
           . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    my $raw = do { local $/; <$s> } // '';
    my (undef, $rest) = split /\r\n\r\n/, $raw, 2;
    my @sizes;
    while ($rest =~ s/\A([0-9a-f]+)\r\n//) {
        my $n = hex $1;
        push @sizes, $n;
        last unless $n;
        substr($rest, 0, $n + 2, '');
    }
    return @sizes;
}

subtest 'events split across buffers at any byte (x-mock-sse-split)' => sub {
    for my $n (1, 7) {
        my @sizes = mock_chunk_sizes($n);
        pop @sizes;   # the final 0
        my $last = pop @sizes;
        ok(@sizes > 100 / $n && !grep({ $_ != $n } @sizes) && $last <= $n,
           "the mock wrote $n-byte chunks (" . scalar(@sizes) . " of them)");
    }
    # Large numbers, so that their digits are split too.
    my %s = (input => 123456789, output => 1, cache_write_5m => 987654321, cache_write_1h => 55555,
             cache_read => 4242424242);
    my $d = '{"output_tokens":31415926,"server_tool_use":{"web_search_requests":12}}';
    my %m = (%s, output => 31415926, web_search => 12);
    for my $n (1, 2, 3, 5, 7, 11, 64, 333, 1000) {
        my $b = snap();
        my $r = stream(mock => { 'x-mock-usage' => usage_json(%s), 'x-mock-usage-delta' => $d,
                                 'x-mock-sse-split' => $n, 'x-mock-model' => 'claude-haiku-4-5' });
        like($r->{decoded}, qr/event: message_stop/, "split $n: whole stream");
        check($srv, $b, $r, "split $n", model => 'claude-haiku-4-5', %m, stream => 'completed',
              log => log_of(%m, model => 'claude-haiku-4-5', stream => 'completed'));
    }
    # A long stream in 1-byte chunks: thousands of buffers.
    my $b = snap();
    my $r = stream(mock => { 'x-mock-usage' => usage_json(%s), 'x-mock-sse-events' => 40, 'x-mock-sse-split' => 1 });
    check($srv, $b, $r, '40 deltas, split 1', %s, output => 40, stream => 'completed',
          log => log_of(%s, output => 40, stream => 'completed'));
};

subtest 'spooled streams: proxy_buffering on and a slow client, sendfile off and on' => sub {
    for my $path ('/buffered/v1/messages', '/sendfile/v1/messages') {
        my $log_before = length $srv->error_log;
        my $b = snap();
        my ($s, $tag) = RG::Usage::open_request($srv, path => $path, stream => 1,
            mock => { 'x-mock-sse-gap-ms' => 0, 'x-mock-sse-events' => 20_000,
                      'x-mock-usage' => usage_json(%start), 'x-mock-usage-delta' => $delta });
        select(undef, undef, undef, 2);   # read nothing for two seconds: nginx must spool
        my $resp = do { local $/; <$s> } // '';
        like($resp, qr{^HTTP/1\.1 200}, "$path: 200");
        like(substr($resp, -300), qr/event: message_stop/, "$path: the client got the whole stream");
        like(substr($srv->error_log, $log_before), qr/an upstream response is buffered to a temporary file/,
             "$path: nginx spooled it to a temp file (the case under test)");
        check($srv, $b, { tag => $tag }, "$path, spooled", %merged, stream => 'completed',
              log => log_of(%merged, stream => 'completed'));
    }
};

subtest 'relay_guard_accounting off: the stream outcome is still counted, no tokens' => sub {
    my $b = snap();
    my $r = stream(path => '/off/v1/messages', mock => { 'x-mock-usage' => usage_json(%start) });
    check($srv, $b, $r, 'usage off', stream => 'completed',
          log => { in => '-', out => '-', cr => '-', cw => '-', model => '-', stream => 'completed' });
};

RG::Usage::no_crash($srv, $workers, 'after all');
$srv->stop;
done_testing();
