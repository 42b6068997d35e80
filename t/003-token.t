# Token mode (for Claude Code and other tools that cannot sign), `any` mode, and upstream key
# injection: the upstream sees the relay's key and none of the client's credentials.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use RG;
use RG::Signed;

repeat_each(1);
no_shuffle();
no_root_location();

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => <<'_EOC_') unless defined $block->http_config;
    relay_guard_zone rg:1m;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_upstream_key_file $TEST_NGINX_DATA_DIR/upstream-key;
_EOC_
    my $mode = $block->mode // 'token';
    chomp $mode;
    $block->set_value(config => <<"_EOC_") unless defined $block->config;
    location / {
        relay_guard $mode;
        add_header X-RG-Status \$relay_guard_status always;
        add_header X-RG-Key \$relay_guard_key_id always;
        proxy_set_header x-api-key \$relay_guard_upstream_key;
        proxy_set_header Authorization "";
        proxy_set_header X-Key-Id "";
        proxy_set_header X-Timestamp "";
        proxy_set_header X-Nonce "";
        proxy_set_header X-Signature "";
        proxy_http_version 1.1;
        proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ {
        proxy_pass http://127.0.0.1:\$TEST_NGINX_MOCK_PORT;
    }
_EOC_
});
# Signs as each block starts (not when the file is parsed), so a slow run (valgrind) stays
# inside the clock window.
add_block_preprocessor(\&RG::Signed::expand);

our $BODY = RG::json_body(300);

run_tests();

__DATA__

=== TEST 1: a static token as Bearer passes; the upstream gets the injected key only
--- request eval
["POST /__mock/reset", "POST /v1/messages?beta=true\n$::BODY"]
--- more_headers eval
"Authorization: Bearer $RG::STATIC_TOKEN\nanthropic-beta: prompt-caching-2024-07-31,token-counting-2024-11-01\nanthropic-version: 2023-06-01\nx-api-key: $RG::STATIC_TOKEN\n"
--- error_code eval
[200, 200]
--- response_headers_like eval
["", "X-RG-Key: team-a"]
--- response_body_like eval
[qr/./, qr/"type":"message"/]
--- no_error_log
[warn]

=== TEST 2: ... and what reached the upstream (checked from the mock's record)
--- request
GET /__mock/record
--- response_body_like eval
# One request; the injected key and Anthropic's headers and query byte for byte; no client
# credential or signature header under any capitalisation.
qr/\A(?!.*(?i:authorization|x-key-id|x-timestamp|x-nonce|x-signature))(?!.*\Q$RG::STATIC_TOKEN\E)
   \{"requests":\[\{[^\]]*"target":"\/v1\/messages\?beta=true".*
   \["x-api-key","\Q$RG::UPSTREAM_KEY\E"\].*
   \["anthropic-beta","prompt-caching-2024-07-31,token-counting-2024-11-01"\],
   \["anthropic-version","2023-06-01"\]/sx

=== TEST 3: a static token as x-api-key (how Claude Code sends ANTHROPIC_API_KEY)
--- request eval
"POST /v1/messages?beta=true\n$::BODY"
--- more_headers eval
"x-api-key: $RG::STATIC_TOKEN\nanthropic-version: 2023-06-01\n"
--- error_code: 200
--- response_headers
X-RG-Status: OK
X-RG-Key: team-a

=== TEST 4: an unknown static token
--- request
GET /v1/models
--- more_headers
Authorization: Bearer not-a-known-token-123
--- error_code: 401
--- response_headers
X-RG-Status: BAD_TOKEN
x-should-retry: false
--- response_body chomp
{"type":"error","error":{"type":"authentication_error","message":"unknown token"}}

=== TEST 5: no credential at all
--- request
GET /v1/models
--- error_code: 401
--- response_headers
X-RG-Status: MISSING
--- response_body_like: "missing credential: send Authorization: Bearer <token> or x-api-key: <token>"

=== TEST 6: a short-lived token minted from alice's secret
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(ttl => 600) . "\n"
--- error_code: 200
--- response_headers
X-RG-Key: alice

=== TEST 7: a short-lived token minted from the previous secret (rotation) still passes
--- request
GET /v1/models
--- more_headers eval
"x-api-key: " . RG::mint(ttl => 600, secret => $RG::OLD_SECRET) . "\n"
--- error_code: 200

=== TEST 8: an expired short-lived token
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(expiry => time() - 5) . "\n"
--- error_code: 401
--- response_headers
X-RG-Status: EXPIRED
--- response_body_like: "token expired at \d+ \(server time \d+\): mint a new one"

=== TEST 9: a token whose expiry is further ahead than relay_guard_token_max_ttl (default 1h)
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(ttl => 3 * 3600) . "\n"
--- error_code: 401
--- response_headers
X-RG-Status: TTL_TOO_LONG

=== TEST 10: relay_guard_token_max_ttl lowers the bound
--- config
    location / {
        relay_guard token;
        relay_guard_token_max_ttl 5m;
        add_header X-RG-Status $relay_guard_status always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(ttl => 600) . "\n"
--- error_code: 401
--- response_headers
X-RG-Status: TTL_TOO_LONG

=== TEST 11: a token signed with another secret
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(secret => 'some-other-secret-0123456') . "\n"
--- error_code: 401
--- response_headers
X-RG-Status: BAD_TOKEN
--- response_body_like: token signature mismatch

=== TEST 12: a malformed short-lived token
--- request
GET /v1/models
--- more_headers
Authorization: Bearer rgt1.alice.soon.deadbeef
--- error_code: 401
--- response_headers
X-RG-Status: MALFORMED

=== TEST 13: a short-lived token for an unknown key id
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer " . RG::mint(key_id => 'mallory') . "\n"
--- error_code: 401
--- response_headers
X-RG-Status: UNKNOWN_KEY

=== TEST 14: token mode ignores signature headers (they are not a credential there)
--- signed: target => '/v1/models', sign_target => '/v1/other', override => {Authorization => "Bearer $RG::STATIC_TOKEN"}
--- error_code: 200

=== TEST 15: any mode: a token alone passes
--- mode: any
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer $RG::STATIC_TOKEN\n"
--- error_code: 200
--- response_headers
X-RG-Key: team-a

=== TEST 16: any mode: signature headers win, so a bad signature fails even with a good token
--- mode: any
--- signed: target => '/v1/models', sign_target => '/v1/other', override => {Authorization => "Bearer $RG::STATIC_TOKEN"}
--- error_code: 401
--- response_headers
X-RG-Status: BAD_SIGNATURE

=== TEST 17: any mode: a good signature passes (and the SDK's placeholder x-api-key is ignored)
--- mode: any
--- signed: target => '/v1/models', override => {'x-api-key' => 'unused'}
--- error_code: 200
--- response_headers
X-RG-Status: OK
X-RG-Key: alice

=== TEST 18: signature mode rejects a token-only request as missing signature headers
--- mode: signature
--- request
GET /v1/models
--- more_headers eval
"Authorization: Bearer $RG::STATIC_TOKEN\n"
--- error_code: 401
--- response_headers
X-RG-Status: MISSING

=== TEST 19: relay_guard off passes the client's own key through untouched (pass-through setup)
--- config
    location / {
        relay_guard off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ { proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT; }
--- request eval
["POST /__mock/reset", "GET /v1/models", "GET /__mock/record"]
--- more_headers
x-api-key: sk-ant-api03-clientsOwnKey-0123456789
--- response_body_like eval
[qr/./, qr/"type":"model"/, qr/\["x-api-key", "sk-ant-api03-clientsOwnKey-0123456789"\]|\["X-Api-Key", "sk-ant-api03-clientsOwnKey-0123456789"\]|sk-ant-api03-clientsOwnKey-0123456789/]

=== TEST 20: a world-readable upstream key file is warned about at startup
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_upstream_key_file $TEST_NGINX_DATA_DIR/upstream-key-world-readable;
--- config
    location / { return 204; }
--- request
GET /
--- error_code: 204
--- error_log eval
qr/\[warn\] .*"relay_guard_upstream_key_file": \S+upstream-key-world-readable is readable by every user \(mode 644\): chmod 600 it/

=== TEST 21: an empty upstream key file fails the configuration
--- http_config
    relay_guard_upstream_key_file $TEST_NGINX_DATA_DIR/bad-keys.json;
--- config
--- must_die
--- error_log eval
qr/\[emerg\] .*"relay_guard_upstream_key_file": \S+bad-keys\.json: the key must be one line of printable ASCII/
