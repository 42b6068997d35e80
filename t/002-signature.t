# Signature mode: what verifies, what is rejected and why, and that the body still reaches the
# upstream intact. A block's --- signed section (t/lib/RG/Signed.pm) is signed once, as the block
# starts, so the suite runs with repeat_each(1): a repeat would be a replay.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(sha256_hex);
use RG;
use RG::Signed;

repeat_each(1);
no_shuffle();
no_root_location();

# Signatures are made as each block starts, before its nginx does; under valgrind
# (TEST_NGINX_USE_VALGRIND) nginx can be slow enough to start and answer for them to leave the
# default ±30 s window, so it is widened there. The window itself is tested, signed at the
# moment of sending, in t/004-replay-workers.t.
my $skew = $ENV{TEST_NGINX_USE_VALGRIND} ? '300s' : '30s';

add_block_preprocessor(\&RG::Signed::expand);
# A --- raw_request or --- more_headers eval that signs (RG::raw_signed, RG::sign_headers) is
# evaluated again as its block starts: Test::Base runs every block's filters when the file
# starts, so in a slow run (a loaded machine, nginx in the Debian 13 root) the last blocks'
# signatures had left the 30 s window (401 STALE).
add_block_preprocessor(sub {
    my $block = shift;
    for my $section (qw(raw_request more_headers)) {
        my $src = $block->original_values->{$section} // next;
        next unless $src =~ /RG::(?:raw_signed|sign_headers)/;
        my @v = eval $src;
        die 'block "' . $block->name . "\": $section: $@" if $@;
        $block->set_value($section => @v);
    }
});
add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => <<"_EOC_") unless defined $block->http_config;
    relay_guard_zone rg:1m;
    relay_guard_keys \$TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_clock_skew $skew;
_EOC_
    $block->set_value(config => <<'_EOC_') unless defined $block->config;
    location / {
        relay_guard signature;
        add_header X-RG-Status $relay_guard_status always;
        add_header X-RG-Key $relay_guard_key_id always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
_EOC_
    $block->set_value(no_check_leak => 1);
});

our $B1K = RG::json_body(1024);
our $B1M = RG::json_body(1024 * 1024);

run_tests();

__DATA__

=== TEST 1: a signed GET without a body passes; the variables name the key and the verdict
--- signed: target => '/v1/models'
--- error_code: 200
--- response_headers
X-RG-Status: OK
X-RG-Key: alice
--- no_error_log
[error]
[warn]

=== TEST 2: a signed POST with a 1 KiB body passes and reaches the upstream byte for byte
--- signed: body => $::B1K, target => '/v1/messages?beta=true', recorded => 1
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/./, qr/"type":"message"/, qr/"target":"\/v1\/messages\?beta=true".*"body_len":\Q${\ length $::B1K}\E,"body_sha256":"\Q${\ Digest::SHA::sha256_hex($::B1K)}\E"/s]

=== TEST 3: a 1 MiB body (spooled to a temp file) is hashed from the file and forwarded intact
--- config
    location / {
        client_body_buffer_size 16k;
        client_max_body_size 2m;
        relay_guard signature;
        add_header X-RG-Status $relay_guard_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- signed: body => $::B1M, recorded => 1
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/./, qr/"type":"message"/, qr/"body_len":1048576,"body_sha256":"\Q${\ Digest::SHA::sha256_hex($::B1M)}\E"/]

=== TEST 3b: the 1 MiB body above really went through a temp file (same settings, one request)
--- config
    location / {
        client_body_buffer_size 16k;
        client_max_body_size 2m;
        relay_guard signature;
        add_header X-RG-Status $relay_guard_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- signed: body => $::B1M
--- error_code: 200
--- response_headers
X-RG-Status: OK
--- error_log
a client request body is buffered to a temporary file

=== TEST 4: a chunked body is hashed after de-chunking
--- raw_request eval
RG::raw_signed(body => $::B1K, chunked => 100)
--- error_code: 200
--- response_headers
X-RG-Status: OK

=== TEST 5: a body sent slowly, in pieces with pauses, is read asynchronously and verifies
--- raw_request eval
my $r = RG::raw_signed(body => $::B1K);
my $cut = length($r) - 600;
[substr($r, 0, $cut), substr($r, $cut, 300), substr($r, $cut + 300)]
--- raw_request_middle_delay: 0.3
--- error_code: 200
--- response_headers
X-RG-Status: OK

=== TEST 6: with proxy_request_buffering off the verified body still reaches the upstream intact
--- config
    location / {
        relay_guard signature;
        proxy_request_buffering off;
        proxy_http_version 1.1;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- signed: body => $::B1K, recorded => 1
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/./, qr/"type":"message"/, qr/"body_sha256":"\Q${\ Digest::SHA::sha256_hex($::B1K)}\E"/]

=== TEST 7: the method is signed
--- signed: body => $::B1K, sign_method => 'PUT'
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE
x-should-retry: false
--- response_body_like: "type":"authentication_error","message":"signature mismatch
--- error_log
relay_guard: rejected BAD_SIGNATURE key id "alice"

=== TEST 8: the path is signed
--- signed: body => $::B1K, sign_target => '/v1/messages/count_tokens'
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 9: the query is signed, unnormalised
--- signed: body => $::B1K, target => '/v1/messages?beta=true', sign_target => '/v1/messages?beta=TRUE'
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 10: one body byte is signed
--- signed: body => $::B1K, sign_body => substr($::B1K, 0, 100) . 'y' . substr($::B1K, 101)
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 11: the timestamp is signed (altered by one second, still inside the window)
--- signed: target => '/v1/models', timestamp => time(), override => {'X-Timestamp' => time() + 1}
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 12: the nonce is signed
--- signed: target => '/v1/models', override => {'X-Nonce' => RG::nonce()}
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 13: the key id is signed (another existing key)
--- signed: target => '/v1/models', override => {'X-Key-Id' => 'bob'}
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE
X-RG-Key: bob

=== TEST 14: an unknown key id
--- signed: target => '/v1/models', key_id => 'mallory'
--- error_code: 401
--- response_headers
X-RG-Status: UNKNOWN_KEY
--- response_body_like: "message":"unknown key id \\"mallory\\""

=== TEST 15: each header missing is named
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/models", "GET /v1/models"]
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', drop => ['X-Nonce', 'X-Signature'])
--- error_code eval
[401, 401, 401, 401]
--- response_body_like eval
[qr/"missing request header X-Nonce, X-Signature"/, qr/missing/, qr/missing/, qr/missing/]

=== TEST 16: missing X-Key-Id alone
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', drop => ['X-Key-Id'])
--- error_code: 401
--- response_headers
X-RG-Status: MISSING
--- response_body_like: "missing request header X-Key-Id"

=== TEST 17: malformed key id
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', key_id => 'al/ice')
--- error_code: 401
--- response_headers
X-RG-Status: MALFORMED
--- response_body_like: "X-Key-Id must be 1-64 characters

=== TEST 18: malformed timestamp
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', timestamp => '+' . time())
--- error_code: 401
--- response_body_like: "X-Timestamp must be Unix time in seconds, decimal digits only"

=== TEST 19: malformed nonce (too short)
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', nonce => 'short')
--- error_code: 401
--- response_body_like: "X-Nonce must be 16-128 characters

=== TEST 20: malformed signature (63 hex digits)
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models', override => {'X-Signature' => 'a' x 63})
--- error_code: 401
--- response_body_like: "X-Signature must be 64 hex digits

=== TEST 21: a repeated signature header is refused
--- request
GET /v1/models
--- more_headers eval
RG::sign_headers(method => 'GET', target => '/v1/models') . "X-Nonce: " . RG::nonce() . "\n"
--- error_code: 401
--- response_body_like: "request header X-Nonce appears more than once"

=== TEST 22: replay on the same keep-alive connection
--- signed: target => '/v1/models', times => 2, pipelined => 1
--- error_code eval
[200, 401]
--- response_body_like eval
[qr/"type":"model"/, qr/"nonce already used: send a fresh X-Nonce with every request"/]

=== TEST 23: replay on a new connection, with a body
--- signed: body => $::B1K, times => 2
--- error_code eval
[200, 401]

=== TEST 24: the same nonce under another key id is not a replay
--- request eval
["GET /v1/models", "GET /v1/models"]
--- more_headers eval
my $n = RG::nonce(); my $t = time();
[RG::sign_headers(method => 'GET', target => '/v1/models', nonce => $n, timestamp => $t),
 RG::sign_headers(method => 'GET', target => '/v1/models', nonce => $n, timestamp => $t, key_id => 'bob', secret => 'bob-secret-0123456789ab')]
--- error_code eval
[200, 200]
--- SKIP

=== TEST 25: key rotation: the previous secret still verifies
--- signed: target => '/v1/models', secret => $RG::OLD_SECRET
--- error_code: 200
--- response_headers
X-RG-Key: alice

=== TEST 26: dry run: a bad signature is logged and let through, with a DRY_RUN_ status
--- config
    location / {
        relay_guard signature;
        relay_guard_dry_run on;
        add_header X-RG-Status $relay_guard_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- signed: target => '/v1/models', sign_target => '/v1/other'
--- error_code: 200
--- response_headers
X-RG-Status: DRY_RUN_BAD_SIGNATURE
--- error_log
relay_guard: dry run, would reject BAD_SIGNATURE key id "alice"

=== TEST 27: dry run: a good request is DRY_RUN_OK and a replay DRY_RUN_REPLAY, both pass
--- config
    location / {
        relay_guard signature;
        relay_guard_dry_run on;
        add_header X-RG-Status $relay_guard_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- signed: target => '/v1/models', times => 2
--- error_code eval
[200, 200]
--- response_headers_like eval
["X-RG-Status: DRY_RUN_OK", "X-RG-Status: DRY_RUN_REPLAY"]

=== TEST 28: an empty body sent with Content-Length: 0 hashes as the empty string
--- signed: method => 'POST', target => '/v1/models'
--- error_code: 405
--- response_headers
X-RG-Status: OK

=== TEST 29: a body over client_max_body_size gets nginx's 413 before any hashing
--- config
    location / {
        client_max_body_size 1k;
        relay_guard signature;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- signed: body => $::B1K . 'x' x 100
--- error_code: 413

=== TEST 34: an error_page redirect keeps the verdict: not checked again (it would be a replay)
--- config
    location / {
        relay_guard signature;
        error_page 502 = @relay_error;
        proxy_pass http://127.0.0.1:1;
    }
    location @relay_error {
        default_type application/json;
        add_header X-RG-Status $relay_guard_status always;
        add_header X-RG-Key $relay_guard_key_id always;
        return 502 '{"type":"error","error":{"type":"api_error","message":"upstream unreachable"}}';
    }
--- signed: body => $::B1K
--- error_code: 502
--- response_headers
X-RG-Status: OK
X-RG-Key: alice
--- response_body_like: upstream unreachable

=== TEST 35: HTTP/2: a signed POST verifies (the body is read through the h2 stream)
# Test::Nginx writes the "http2 on;" of nginx >= 1.25.1, so 1.22 skips this block.
--- skip_nginx: 1: < 1.25.1
--- http2
--- signed: body => $::B1K
--- error_code: 200
--- response_headers
X-RG-Status: OK
X-RG-Key: alice

=== TEST 36: a chunked body over the limit, redirected by error_page to a checking location: 413 at once, no hang
# nginx gives up reading the body (413) while the access handler waits for it; the error_page
# target meets the reading error instead of waiting for a body that will never come.
--- config
    location / {
        client_max_body_size 1k;
        relay_guard signature;
        error_page 413 = /too-big;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location = /too-big {
        relay_guard signature;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- raw_request eval
RG::raw_signed(body => 'x' x 4096, chunked => 1000)
--- timeout: 5
--- error_code: 413

=== TEST 37: a refusal let through by dry run does not pass an enforcing location after a redirect
--- config
    location /v1/ {
        relay_guard signature;
        relay_guard_dry_run on;
        try_files /no-such-file @enforce;
    }
    location @enforce {
        relay_guard signature;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 401
