# The module loads into this nginx, and with relay_guard off it changes nothing.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

repeat_each(2);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: module loads and relay_guard off passes requests through
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location /v1/ {
        relay_guard off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 200
--- response_body_like: "type":"model"
--- no_error_log
[error]
[alert]

=== TEST 2: no relay_guard directive at all: the access handler declines
--- config
    location /v1/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 200
--- no_error_log
[error]

=== TEST 3: the directives are known to nginx (a typo would be "unknown directive")
--- http_config
    relay_guard_zone rg_sanity:1m;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_clock_skew 30s;
    relay_guard_dry_run off;
    relay_guard_token_max_ttl 1h;
--- config
    location /v1/ {
        relay_guard signature;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 401
--- response_headers
Content-Type: application/json
x-should-retry: false
--- response_body_like: ^\{"type":"error","error":\{"type":"authentication_error","message":"missing request header X-Key-Id, X-Timestamp, X-Nonce, X-Signature"\}\}$
