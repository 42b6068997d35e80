# Errors through the shipped config (nginx-conf/server.conf, proxy.conf, locations.conf):
# the upstream's own errors (429, 529, 500) reach the client untouched with their retry-after;
# a POST that reached the upstream is never sent twice; errors the relay generates itself
# (upstream down 502, timeout 504, body too large 413, over the in-flight limit 503) are
# answered fast in Anthropic's JSON error shape with retry-after / x-should-retry.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(time sleep);
use POSIX ();
use RG::Conf;
use RG;

repeat_each(1);
no_shuffle();
no_root_location();

our $TOKEN = $RG::STATIC_TOKEN;
our $BODY = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}';
our $STREAM = '{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}';

# The mock's control endpoints, reached through the relay (without credentials or key).
our $MOCK_LOCATION = <<'_EOC_';
    location /__mock/ {
        relay_guard off;
        proxy_pass https://127.0.0.1:$TEST_NGINX_MOCK_TLS_PORT;
        proxy_ssl_verify off;
    }
_EOC_

# Shipped locations plus the mock's control endpoints, by default; blocks with a short read
# timeout build /v1/messages and /v1/models from proxy.conf the way locations.conf does.
add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(config => <<"_EOC_") unless defined $block->config;
    relay_guard any;
    relay_guard_keys \$TEST_NGINX_DATA_DIR/keys.json;
    include relay-guard/server.conf;
    include relay-guard/locations.conf;
$::MOCK_LOCATION
_EOC_
    RG::Conf::preprocessor($block);
});

our $SHORT_TIMEOUT = <<"_EOC_";
    relay_guard any;
    relay_guard_keys \$TEST_NGINX_DATA_DIR/keys.json;
    include relay-guard/server.conf;
    location = /v1/messages {
        include relay-guard/proxy.conf;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout 1s;
    }
    location /v1/models {
        include relay-guard/proxy.conf;
        proxy_set_header Connection "";
        proxy_read_timeout 1s;
    }
$MOCK_LOCATION
_EOC_

# Response body filter: the mock's record becomes "requests=N"; other bodies stay as they are.
sub count_records {
    my ($json) = @_;
    return $json unless $json =~ /\A\{"requests":/;
    my $n = () = $json =~ /"request_id":/g;
    return "requests=$n";
}

run_tests();

# --- the in-flight limit, against the nginx of the last block (limit_conn relay_conns 1) -----
SKIP: {
    # Under valgrind Test::Nginx stops nginx after the last block, to collect its report.
    skip "needs the last block's nginx still running (not under valgrind)", 1
        if $ENV{TEST_NGINX_USE_VALGRIND};
    my $req = "POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nx-api-key: $TOKEN\r\n"
            . "content-type: application/json\r\nx-mock-sse-gap-ms: 300\r\nContent-Length: " . length($STREAM)
            . "\r\n\r\n$STREAM";
    # A slow stream holds the only slot...
    my $pid = fork // die "fork: $!";
    # (POSIX::_exit: a plain exit would run Test::Nginx's END block and stop nginx.)
    if (!$pid) { RG::Conf::timed_request($req, timeout => 10); POSIX::_exit(0) }
    sleep 0.5;
    my $t0 = time;
    my $res = RG::Conf::http('POST', '/v1/messages', ['x-api-key' => $TOKEN, 'content-type' => 'application/json'], $::BODY);
    my $took = time - $t0;
    is($res->{status}, 503, 'limit: a request over the in-flight limit gets 503');
    cmp_ok($took, '<', 0.5, sprintf('limit: ... at once (%.3fs)', $took));
    is($res->{body}, '{"type":"error","error":{"type":"overloaded_error","message":"relay: too many requests in flight, retry shortly"}}',
       'limit: ... as overloaded_error');
    is($res->{headers}{'retry-after'}, '2', 'limit: ... with retry-after');
    is($res->{headers}{'x-should-retry'}, 'true', 'limit: ... and x-should-retry: true');
    waitpid $pid, 0;
    # ...and once it is done, the slot is free again.
    $res = RG::Conf::http('POST', '/v1/messages', ['x-api-key' => $TOKEN, 'content-type' => 'application/json'], $::BODY);
    is($res->{status}, 200, 'limit: after the stream ends, requests pass again');
}

__DATA__

=== TEST 1: 429 from the upstream reaches the client untouched: body, retry-after, request-id
--- request
POST /v1/messages
{"model":"x","max_tokens":1,"messages":[]}
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-status: 429\n"
--- error_code: 429
--- response_headers_like
retry-after: 7
request-id: req_mock_\d+
anthropic-ratelimit-requests-limit: \d+
Content-Type: application/json
--- response_body: {"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit."}}
--- no_error_log
[error]

=== TEST 2: 529 overloaded from the upstream reaches the client untouched
--- request
POST /v1/messages
{"model":"x","max_tokens":1,"messages":[]}
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-status: 529\n"
--- error_code: 529
--- response_headers
retry-after: 7
--- response_body: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}

=== TEST 3: 500 from the upstream: its own body (not the relay's), and the POST is not re-sent
Two servers in the pool, so nginx could retry; it must not, for an error response.
--- post_setup_server_root: RG::Conf::setup(upstream => 'tls2')
--- request eval
["POST /__mock/reset", "POST /v1/messages\n$::BODY", "GET /__mock/record"]
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-status: 500\n"
--- error_code eval
[200, 500, 200]
--- response_body_filters eval
\&main::count_records
--- response_body eval
['{"ok":true}', '{"type":"error","error":{"type":"api_error","message":"Internal server error"}}', 'requests=1']

=== TEST 4: upstream down: a fast Anthropic-shaped 502 with retry-after
--- post_setup_server_root: RG::Conf::setup(upstream => 'down')
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\n"
--- timeout: 2
--- error_code: 502
--- response_headers
Content-Type: application/json
retry-after: 5
x-should-retry: true
--- response_body: {"type":"error","error":{"type":"api_error","message":"relay: upstream unreachable"}}
--- error_log
connect() failed (111: Connection refused) while connecting to upstream

=== TEST 5: an upstream whose certificate does not match the name: 502, never relayed
--- post_setup_server_root: RG::Conf::setup(upstream => 'tls', host => 'wrong.example')
--- request eval
["POST /__mock/reset", "POST /v1/messages\n$::BODY", "GET /__mock/record"]
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\n"
--- error_code eval
[200, 502, 200]
--- response_body_filters eval
\&main::count_records
--- response_body eval
['{"ok":true}', '{"type":"error","error":{"type":"api_error","message":"relay: upstream unreachable"}}', 'requests=0']

=== TEST 6: upstream stalls past proxy_read_timeout: 504 timeout_error, the POST sent once
--- post_setup_server_root: RG::Conf::setup(upstream => 'tls2')
--- config eval: $::SHORT_TIMEOUT
--- request eval
["POST /__mock/reset", "POST /v1/messages\n$::BODY", "GET /__mock/record"]
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\nx-mock-delay-ms: 3000\n"
--- timeout: 5
--- error_code eval
[200, 504, 200]
--- response_headers_like eval
["", "retry-after: 5\nx-should-retry: true\nContent-Type: application/json", ""]
--- response_body_filters eval
\&main::count_records
--- response_body eval
['{"ok":true}', '{"type":"error","error":{"type":"timeout_error","message":"relay: upstream timed out"}}', 'requests=1']

=== TEST 7: ... whereas an idempotent GET that timed out is tried on the next server (bounded)
Shows the POST above was not re-sent by choice, not for lack of a second server.
--- post_setup_server_root: RG::Conf::setup(upstream => 'tls2')
--- config eval: $::SHORT_TIMEOUT
--- request eval
["POST /__mock/reset", "GET /v1/models", "GET /__mock/record"]
--- more_headers eval
"x-api-key: $::TOKEN\nx-mock-delay-ms: 3000\n"
--- timeout: 6
--- error_code eval
[200, 504, 200]
--- response_body_filters eval
\&main::count_records
--- response_body eval
['{"ok":true}', '{"type":"error","error":{"type":"timeout_error","message":"relay: upstream timed out"}}', 'requests=2']

=== TEST 8: a body over Anthropic's 32 MB Messages limit: 413 request_too_large, not relayed
--- raw_request eval
"POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nx-api-key: $::TOKEN\r\ncontent-type: application/json\r\nContent-Length: 33554433\r\n\r\n{"
--- timeout: 8
--- error_code: 413
--- response_headers
Content-Type: application/json
x-should-retry: false
--- response_body: {"type":"error","error":{"type":"request_too_large","message":"relay: request body exceeds the limit for this endpoint"}}
--- error_log
client intended to send too large body: 33554433 bytes

=== TEST 9: ... while a 2 MB body is fine on /v1/messages
--- request eval
"POST /v1/messages\n" . RG::json_body(2 * 1024 * 1024)
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\n"
--- error_code: 200
--- response_body_like: "type":"message"

=== TEST 10: (kept running for the in-flight limit checks after run_tests)
--- config
    relay_guard any;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    include relay-guard/server.conf;
    location = /v1/messages {
        limit_conn relay_conns 1;
        include relay-guard/proxy.conf;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout 10s;
    }
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\n"
--- error_code: 200
