# relay_guard_redact runs before every other LOG-phase handler, whatever the load order: with
# Debian's lua module (libnginx-mod-http-lua, installed by scripts/setup) loaded before and
# after relay-guard, a log_by_lua handler sees masked values. Debian's nginx only, 1.22 on the
# system or 1.26 in the Debian 13 root (each has its own lua module, built for it). Error log at
# level info: at debug level nginx dumps raw headers, which the README documents as not maskable.
use lib 't/lib';
use Test::Nginx::Socket;
use RG;
use RG::Lua;
use RG::Redact;

RG::Lua::plan_or_skip();
our $LUA_FIRST = RG::Lua::lua_first();
our $LUA_LAST = RG::Lua::lua_last();

repeat_each(1);
no_shuffle();
no_root_location();
log_level('info');

our %S = %RG::Redact::S;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => <<'_EOC_') unless defined $block->http_config;
    relay_guard_zone rg:1m;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_upstream_key_file $TEST_NGINX_DATA_DIR/upstream-key;
_EOC_
    $block->set_value(config => <<'_EOC_') unless defined $block->config;
    relay_guard_redact on;
    location /v1/ {
        relay_guard off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        log_by_lua_block {
            ngx.log(ngx.WARN, "lua sees: auth=", ngx.var.http_authorization,
                    " key=", ngx.var.http_x_api_key, " uri=", ngx.var.request_uri,
                    " cookie=", ngx.var.http_cookie, " ua=", ngx.var.http_user_agent,
                    " arg=", ngx.var.arg_token, " h=", ngx.req.get_headers()["x-debug"])
        }
    }
_EOC_
    # Distinct per block, so that nginx restarts with the block's load order even when
    # TEST_NGINX_FORCE_RESTART_ON_TEST=0 (Test::Nginx compares only the config section).
    $block->set_value(config => $block->config . "    # block: " . $block->name . "\n");
});

our $REQ = "GET /v1/models?token=$S{q_token}&note=$S{api03}";
our $HDRS = "Authorization: Bearer $S{oat01}\nx-api-key: $S{admin01}\n"
          . "Cookie: rg_session=$S{cookie}\nUser-Agent: ua $S{ua_key}\nX-Debug: $S{rgt}\n";
my $fp = '\[redacted:[0-9a-f]{8}\]';
our $SEES = qr/lua sees: auth=Bearer sk-ant-oat01-$fp key=sk-ant-admin01-$fp uri=\/v1\/models\?token=$fp&note=sk-ant-api03-$fp cookie=rg_session=$fp ua=ua sk-ant-api03-$fp arg=$fp h=rgt1\.$fp/;
# Every 12-byte slice of every secret in the request.
my $any = join '|', map { quotemeta }
    map { RG::Redact::windows($S{$_}) } qw(q_token api03 oat01 admin01 cookie ua_key rgt);
our $SLICES = qr/$any/;

run_tests();

__DATA__

=== TEST 1: lua loaded before relay-guard: log_by_lua sees masks
--- main_config eval: $::LUA_FIRST
--- request eval: $::REQ
--- more_headers eval: $::HDRS
--- error_code: 200
--- error_log eval: $::SEES
--- no_error_log eval: $::SLICES

=== TEST 2: lua loaded after relay-guard: log_by_lua sees masks
--- main_config eval: $::LUA_LAST
--- request eval: $::REQ
--- more_headers eval: $::HDRS
--- error_code: 200
--- error_log eval: $::SEES
--- no_error_log eval: $::SLICES

=== TEST 3: relay_guard_redact off: log_by_lua sees the secrets (the checks above can fail)
--- main_config eval: $::LUA_LAST
--- config
    relay_guard_redact off;
    location /v1/ {
        relay_guard off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        log_by_lua_block {
            ngx.log(ngx.WARN, "lua sees: auth=", ngx.var.http_authorization)
        }
    }
--- request eval: $::REQ
--- more_headers eval: $::HDRS
--- error_code: 200
--- error_log eval
qr/lua sees: auth=Bearer \Q$::S{oat01}\E/
