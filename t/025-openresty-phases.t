# OpenResty's core, Debian's lua module (libnginx-mod-http-lua, installed by scripts/setup),
# loaded beside relay-guard: what ngx.var.relay_guard_key_id and ngx.var.relay_guard_status read
# in access_by_lua*, header_filter_by_lua* and log_by_lua*, for signed and token requests,
# accepted and rejected, in each order of the two ACCESS-phase handlers. OpenResty's own bundle
# cannot be fetched here: this is its lua module on Debian's nginx 1.22, not OpenResty.
#
# What decides the order, measured here: nginx runs a phase's handlers from the last appended
# to the first, each module appending its own in postconfiguration, in module order. Module
# order is not load_module order for lua: its build (like every HTTP_AUX_FILTER module, and as
# in OpenResty, where it is compiled in) places it before ngx_http_copy_filter_module, so its
# postconfiguration runs before relay-guard's, which is appended at the end. relay-guard's
# ACCESS handler is therefore appended after lua's and runs first: access_by_lua always sees
# the verdict (OK and the key id), whether lua is loaded before or after relay-guard and
# whether lua postpones its handler to the end of the phase (its default) or not
# (access_by_lua_no_postpone on). A request relay-guard rejects is answered before lua's
# access handler is reached. rewrite_by_lua (REWRITE, an earlier phase) runs before any
# check: both variables are not found there (nil in lua). Filters and the LOG phase come
# after ACCESS: header_filter_by_lua and log_by_lua see the verdict, rejections included
# (relay-guard's 401 goes through the header filters).
# System nginx 1.22 only (the lua module is built for it).
use lib 't/lib';
use Test::Nginx::Socket;
use RG;
use RG::Lua;
use RG::Signed;

RG::Lua::plan_or_skip();
my %LOADS = (
    lua_first => RG::Lua::lua_first(),
    lua_last  => RG::Lua::lua_last(),
);

repeat_each(1);
no_shuffle();
no_root_location();
log_level('info');

our $BODY = RG::json_body(300);
our $BAD_TOKEN = 'not-a-known-token-0123456789';

# --- order: lua_first | lua_last (load order); --- postpone: on (lua's default) | off
# (access_by_lua_no_postpone on). Each lua handler logs what it reads and the header filter
# also copies it into response headers, so both the log and the response show it.
add_block_preprocessor(sub {
    my $block = shift;
    my $order = $block->order // 'lua_first';
    chomp $order;
    die "block " . $block->name . ": --- order is lua_first or lua_last\n" unless $LOADS{$order};
    my $postpone = $block->postpone // 'on';
    chomp $postpone;
    $block->set_value(main_config => $LOADS{$order});
    my $no_postpone = $postpone eq 'off' ? "access_by_lua_no_postpone on;\n" : '';
    $block->set_value(http_config => <<"_EOC_");
    relay_guard_zone rg:1m;
    relay_guard_keys \$TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_upstream_key_file \$TEST_NGINX_DATA_DIR/upstream-key;
    $no_postpone
_EOC_
    $block->set_value(config => <<'_EOC_' . "    # block: " . $block->name . "\n");
    location /v1/ {
        relay_guard any;
        proxy_set_header x-api-key $relay_guard_upstream_key;
        proxy_set_header Authorization "";
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
        rewrite_by_lua_block {
            ngx.log(ngx.WARN, "lua phase=rewrite key=", tostring(ngx.var.relay_guard_key_id),
                    " status=", tostring(ngx.var.relay_guard_status))
        }
        access_by_lua_block {
            ngx.log(ngx.WARN, "lua phase=access key=", tostring(ngx.var.relay_guard_key_id),
                    " status=", tostring(ngx.var.relay_guard_status))
        }
        header_filter_by_lua_block {
            ngx.header["X-Lua-Key"] = tostring(ngx.var.relay_guard_key_id)
            ngx.header["X-Lua-Status"] = tostring(ngx.var.relay_guard_status)
            ngx.log(ngx.WARN, "lua phase=header_filter key=", tostring(ngx.var.relay_guard_key_id),
                    " status=", tostring(ngx.var.relay_guard_status))
        }
        log_by_lua_block {
            ngx.log(ngx.WARN, "lua phase=log key=", tostring(ngx.var.relay_guard_key_id),
                    " status=", tostring(ngx.var.relay_guard_status))
        }
    }
_EOC_
});
add_block_preprocessor(\&RG::Signed::expand);

# What each lua phase logs: rewrite (before any check), access (after relay-guard's
# handler; undef: never reached, the request was rejected), header_filter and log.
sub seen {
    my ($access, $final) = @_;
    return [qr/lua phase=rewrite key=nil status=nil[ ,]/,
            (defined $access ? qr/lua phase=access key=\Q$access\E[ ,]/ : ()),
            qr/lua phase=header_filter key=\Q$final\E[ ,]/, qr/lua phase=log key=\Q$final\E[ ,]/];
}
our %SEES = (
    signed_ok  => seen('alice status=OK', 'alice status=OK'),
    token_ok   => seen('team-a status=OK', 'team-a status=OK'),
    signed_bad => seen(undef, 'alice status=BAD_SIGNATURE'),
    token_bad  => seen(undef, 'nil status=BAD_TOKEN'),
);
our $NO_ACCESS = qr/lua phase=access/;

run_tests();

__DATA__

=== TEST 1: postponed (lua's default), lua loaded first: signed, accepted; lua's access runs after relay-guard
--- order: lua_first
--- signed: body => $::BODY
--- error_code: 200
--- response_headers
X-Lua-Key: alice
X-Lua-Status: OK
--- error_log eval: $::SEES{signed_ok}
--- no_error_log
[error]

=== TEST 2: postponed, lua loaded first: a token, accepted
--- order: lua_first
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"Authorization: Bearer $RG::STATIC_TOKEN\n"
--- error_code: 200
--- response_headers
X-Lua-Key: team-a
X-Lua-Status: OK
--- error_log eval: $::SEES{token_ok}

=== TEST 3: postponed, lua loaded first: a bad signature is rejected before lua's access handler
--- order: lua_first
--- signed: body => $::BODY, sign_body => 'another body'
--- error_code: 401
--- response_headers
X-Lua-Key: alice
X-Lua-Status: BAD_SIGNATURE
--- error_log eval: $::SEES{signed_bad}
--- no_error_log eval: $::NO_ACCESS

=== TEST 4: postponed, lua loaded last: still after relay-guard
--- order: lua_last
--- signed: body => $::BODY
--- error_code: 200
--- response_headers
X-Lua-Key: alice
X-Lua-Status: OK
--- error_log eval: $::SEES{signed_ok}

=== TEST 5: postponed, lua loaded last: a bad token is rejected before lua's access handler
--- order: lua_last
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"Authorization: Bearer $::BAD_TOKEN\n"
--- error_code: 401
--- response_headers
X-Lua-Key: nil
X-Lua-Status: BAD_TOKEN
--- error_log eval: $::SEES{token_bad}
--- no_error_log eval: $::NO_ACCESS

=== TEST 6: no_postpone, lua loaded first: lua's access handler runs after relay-guard's (signed)
--- order: lua_first
--- postpone: off
--- signed: body => $::BODY
--- error_code: 200
--- response_headers
X-Lua-Key: alice
X-Lua-Status: OK
--- error_log eval: $::SEES{signed_ok}

=== TEST 7: no_postpone, lua loaded first: a bad token never reaches lua's access handler
--- order: lua_first
--- postpone: off
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"Authorization: Bearer $::BAD_TOKEN\n"
--- error_code: 401
--- response_headers
X-Lua-Key: nil
X-Lua-Status: BAD_TOKEN
--- error_log eval: $::SEES{token_bad}
--- no_error_log eval: $::NO_ACCESS

=== TEST 8: no_postpone, lua loaded last: lua's access handler still runs after relay-guard's (signed)
--- order: lua_last
--- postpone: off
--- signed: body => $::BODY
--- error_code: 200
--- response_headers
X-Lua-Key: alice
X-Lua-Status: OK
--- error_log eval: $::SEES{signed_ok}

=== TEST 9: no_postpone, lua loaded last: a token, accepted
--- order: lua_last
--- postpone: off
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"Authorization: Bearer $RG::STATIC_TOKEN\n"
--- error_code: 200
--- response_headers
X-Lua-Key: team-a
X-Lua-Status: OK
--- error_log eval: $::SEES{token_ok}

=== TEST 10: no_postpone, lua loaded last: a bad signature never reaches lua's access handler
--- order: lua_last
--- postpone: off
--- signed: body => $::BODY, sign_body => 'another body'
--- error_code: 401
--- response_headers
X-Lua-Key: alice
X-Lua-Status: BAD_SIGNATURE
--- error_log eval: $::SEES{signed_bad}
--- no_error_log eval: $::NO_ACCESS

=== TEST 11: no_postpone, lua loaded last: nor does a bad token
--- order: lua_last
--- postpone: off
--- request eval
"POST /v1/messages\n$::BODY"
--- more_headers eval
"Authorization: Bearer $::BAD_TOKEN\n"
--- error_code: 401
--- response_headers
X-Lua-Key: nil
X-Lua-Status: BAD_TOKEN
--- error_log eval: $::SEES{token_bad}
--- no_error_log eval: $::NO_ACCESS
