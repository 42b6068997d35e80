# relay_guard_redact: no API key, token, signature or cookie value reaches an access log or an
# error-log line, whatever the log_format, while the upstream still receives every original
# value (retries included).
#
# The access and error logs under test are written to a directory outside the servroot
# (Test::Nginx wipes servroot/logs at every block) and checked after run_tests(): no 12-byte
# slice of any secret of the corpus (t/lib/RG/Redact.pm) may appear, and masks must be there (so
# the check fails if logging were simply off).
#
# The error logs are at level info: at debug level nginx itself dumps raw request headers
# ("http header: ..."), which the README documents as not maskable. Debian's nginx is built
# --with-debug, so Test::Nginx's default level (debug) would leak by design.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use JSON::PP ();
use RG;
use RG::Redact;

repeat_each(1);
no_shuffle();
no_root_location();
log_level('info');

our $DIR = RG::Redact::log_dir();
our %S = %RG::Redact::S;

add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => <<'_EOC_') unless defined $block->http_config;
    relay_guard_zone rg:1m;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard_upstream_key_file $TEST_NGINX_DATA_DIR/upstream-key;
    # Every variable that can carry a secret.
    log_format rg_json escape=json '{"case":"$http_x_case","status":"$status",'
        '"request":"$request","request_uri":"$request_uri","args":"$args",'
        '"query_string":"$query_string","uri":"$uri","authorization":"$http_authorization",'
        '"x_api_key":"$http_x_api_key","cookie":"$http_cookie","user_agent":"$http_user_agent",'
        '"referer":"$http_referer","x_signature":"$http_x_signature","arg_key":"$arg_key",'
        '"proxy_authorization":"$http_proxy_authorization","x_debug":"$http_x_debug",'
        '"x_custom":"$http_x_custom_secret","x_upstream_echo":"$http_x_upstream_echo",'
        '"arg_token":"$arg_token","arg_session_id":"$arg_session_id",'
        '"cookie_rg_session":"$cookie_rg_session"}';
    upstream rg_retry {
        server 127.0.0.1:1 max_fails=0;
        server 127.0.0.1:$TEST_NGINX_MOCK_PORT max_fails=0;
    }
_EOC_
    $block->set_value(config => <<'_EOC_') unless defined $block->config;
    relay_guard_redact on;
    access_log $TEST_NGINX_REDACT_DIR/combined.log combined;
    access_log $TEST_NGINX_REDACT_DIR/json.log rg_json;
    error_log logs/error.log info;
    error_log $TEST_NGINX_REDACT_DIR/error.log info;

    # Pass-through: no relay-guard authentication at all.
    location /v1/ {
        relay_guard off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # Token mode, upstream key injected.
    location /tok/ {
        relay_guard token;
        proxy_set_header x-api-key $relay_guard_upstream_key;
        proxy_set_header Authorization "";
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # Nothing listens on port 1: 502 and a "connect() failed" error-log line.
    location /down/ {
        relay_guard off;
        proxy_pass http://127.0.0.1:1;
    }
    # The mock stalls (x-mock-delay-ms): 504 and an "upstream timed out" error-log line.
    location /slow/ {
        relay_guard off;
        proxy_read_timeout 300ms;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # First server down, retry to the mock.
    location /retry/ {
        relay_guard off;
        proxy_next_upstream error timeout;
        proxy_pass http://rg_retry;
    }
    location /extra/ {
        relay_guard off;
        relay_guard_redact_header X-Custom-Secret;
        relay_guard_redact_arg session_id;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # Same names without the directives: logged as is, to a separate file.
    location /noextra/ {
        relay_guard off;
        access_log $TEST_NGINX_REDACT_DIR/noextra.log rg_json;
        error_log $TEST_NGINX_REDACT_DIR/noextra-error.log info;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # An upstream key no pattern recognises: masked as a literal.
    location /literal/ {
        relay_guard token;
        relay_guard_upstream_key_file $TEST_NGINX_REDACT_DIR/literal-upstream-key;
        proxy_set_header x-api-key $relay_guard_upstream_key;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    # Redaction off: everything is logged as is (the checks can fail).
    location /off/ {
        relay_guard off;
        relay_guard_redact off;
        access_log $TEST_NGINX_REDACT_DIR/off.log rg_json;
        access_log $TEST_NGINX_REDACT_DIR/off-combined.log combined;
        error_log $TEST_NGINX_REDACT_DIR/off-error.log info;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
    location /__mock/ {
        access_log off;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
_EOC_
});

sub hdrs { join '', map { "$_\n" } @_ }

# Case A: the whole corpus in one pass-through request.
our $TARGET_A = "/v1/models/$S{path_key}?key=$S{q_key}&api_key=$S{q_pct}&apikey=$S{q_apikey}"
    . "&token=$S{q_token}&access_token=$S{q_access}&signature=$S{q_sig}&Sig=$S{q_sig2}"
    . "&key=$S{q_key2}&to%6Ben=$S{q_pctname}&beta=true&up=$S{upstream}";
our %HA = (
    'X-Case' => 'c-A',
    'Authorization' => "Bearer $S{oat01}",
    'Proxy-Authorization' => "Basic $S{proxy_b64}",
    'x-api-key' => $S{admin01},
    'Cookie' => "rg_session=$S{cookie}; theme=dark; other=$S{cookie2}",
    'X-Signature' => $S{sig_hex},
    'User-Agent' => "claude-cli/1.0.0 (external, cli) key=$S{ua_key}",
    'Referer' => "https://console.example.com/settings?page=2&token=$S{ref_token}",
    'X-Debug' => "upstream said Bearer $S{bearer_x}",
    'X-Forwarded-Key' => $S{ort01},
    'X-Upstream-Echo' => $S{upstream},
    'X-Note' => "keys $S{api03} and $S{rgt}",
);
our $HEADERS_A = join '', map { "$_: $HA{$_}\n" } sort keys %HA;

# What the upstream received for a request: the raw target and each header value, intact.
sub record_has {
    my ($target, %h) = @_;
    my $js = JSON::PP->new->allow_nonref;
    my $re = '\A(?=.*"target":\s*' . quotemeta($js->encode($target)) . ')';
    for my $k (sort keys %h) {
        $re .= '(?=.*\[' . quotemeta($js->encode($k)) . ',\s*' . quotemeta($js->encode($h{$k})) . '\])';
    }
    return qr/$re/s;
}

# Case B: a static token presented as x-api-key and pasted elsewhere.
our $TARGET_B = "/tok/models/$S{static}?q=$S{static}&beta=true";
our $HEADERS_B = hdrs("X-Case: c-B", "x-api-key: $S{static}", "X-Debug: pasted $S{static} here",
                      "Referer: https://x.example.com/?from=$S{static}");

# Case C: a short-lived rgt1 token as Bearer, also in a query and a custom header.
our $TARGET_C = "/tok/models?token=$S{rgt}&note=$S{rgt}";
our $HEADERS_C = hdrs("X-Case: c-C", "Authorization: Bearer $S{rgt}", "X-Debug: $S{rgt}");

# Error-log cases: request line, upstream and referrer all carry secrets.
our $REF_E = "https://console.example.com/settings?page=2&token=$S{ref_token}";
our $HEADERS_E = hdrs("Authorization: Bearer $S{api03}", "Referer: $REF_E",
                      "User-Agent: ua $S{ua_key}", "X-Signature: $S{sig_hex}");

run_tests();

# --- After the run: the logs themselves.

my $json = RG::Redact::slurp("$DIR/json.log") // '';
my %by_case;
for my $l (split /\n/, $json) {
    my $e = eval { JSON::PP->new->decode($l) };
    ok($e, "json.log line is JSON") or diag($l), next;
    push @{ $by_case{$e->{case}} }, $e;
}

RG::Redact::no_leaks_in("$DIR/json.log", name => 'json access log', min_lines => 11);
RG::Redact::no_leaks_in("$DIR/combined.log", name => 'combined access log', min_lines => 11);
RG::Redact::no_leaks_in("$DIR/error.log", name => 'error log', min_lines => 3,
                    lines => qr/request: "/);

# Masks where the secrets were, names and public prefixes kept.
my $fp = qr/\[redacted:[0-9a-f]{8}\]/;
my $a = $by_case{'c-A'}[0] // {};
like($a->{authorization} // '', qr/\ABearer sk-ant-oat01-$fp\z/, 'A: Authorization');
like($a->{x_api_key} // '', qr/\Ask-ant-admin01-$fp\z/, 'A: x-api-key');
like($a->{proxy_authorization} // '', qr/\ABasic $fp\z/, 'A: Proxy-Authorization');
like($a->{cookie} // '', qr/\Arg_session=$fp; theme=.*; other=$fp\z/, 'A: Cookie names kept');
like($a->{cookie_rg_session} // '', qr/\A$fp\z/, 'A: $cookie_rg_session');
like($a->{x_signature} // '', qr/\A$fp\z/, 'A: X-Signature');
like($a->{arg_key} // '', qr/\A$fp\z/, 'A: $arg_key');
like($a->{arg_token} // '', qr/\A$fp\z/, 'A: $arg_token');
like($a->{user_agent} // '', qr/\Aclaude-cli\/1\.0\.0 \(external, cli\) key=sk-ant-api03-$fp\z/,
     'A: User-Agent');
like($a->{referer} // '', qr/\Ahttps:\/\/console\.example\.com\/settings\?page=2&token=$fp\z/,
     'A: Referer');
like($a->{x_debug} // '', qr/\Aupstream said Bearer $fp\z/, 'A: Bearer in a custom header');
like($a->{x_upstream_echo} // '', qr/\Ask-ant-api03-$fp\z/, 'A: upstream key in a header');
like($a->{request_uri} // '', qr/\A\/v1\/models\/sk-ant-api03-$fp\?key=$fp&api_key=$fp&apikey=$fp&token=$fp&access_token=$fp&signature=$fp&Sig=$fp&key=$fp&to%6Ben=$fp&beta=true&up=sk-ant-api03-$fp\z/,
     'A: $request_uri: every secret argument, repeated, percent-encoded name');
is($a->{args}, ($a->{request_uri} // '') =~ s/^[^?]*\?//r, 'A: $args as masked as $request_uri');
like($a->{uri} // '', qr/\A\/v1\/models\/sk-ant-api03-$fp\z/, 'A: $uri');
like($a->{request} // '', qr/\AGET \/v1\/models\/sk-ant-api03-$fp\?key=$fp&.* HTTP\/1\.1\z/, 'A: $request');

my ($a1, $a2) = @{ $by_case{'c-FP'} || [] };
ok($a1 && $a2, 'FP: two requests logged');
like($a1->{x_api_key} // '', qr/\Ask-ant-api03-$fp\z/, 'FP: masked');
is($a1->{x_api_key}, $a2->{x_api_key}, 'FP: same secret, same fingerprint within a run');
is($a1->{x_api_key} =~ s/.*-//r, ($a1->{arg_key} // '') =~ s/.*-//r,
   'FP: same fingerprint in a header and in a query argument');
isnt($a1->{x_api_key}, $a1->{authorization} =~ s/^Bearer //r, 'FP: another secret, another fingerprint');

my $b = $by_case{'c-B'}[0] // {};
is($b->{status}, '404', 'B: authenticated (reached the mock)');
like($b->{x_debug} // '', qr/\Apasted $fp here\z/, 'B: presented token masked in another header');
like($b->{request_uri} // '', qr/\A\/tok\/models\/$fp\?q=$fp&beta=true\z/,
     'B: presented token masked in the path and a non-secret argument');
like($b->{referer} // '', qr/\Ahttps:\/\/x\.example\.com\/\?from=$fp\z/, 'B: ... and the Referer');
is($b->{x_api_key} =~ s/.*\[/[/r, $b->{x_debug} =~ s/^pasted (\S+) here$/$1/r,
   'B: same fingerprint wherever the token appears');

my $c = $by_case{'c-C'}[0] // {};
is($c->{status}, '404', 'C: rgt1 token authenticated');
like($c->{authorization} // '', qr/\ABearer rgt1\.$fp\z/, 'C: only rgt1. stays');
like($c->{request_uri} // '', qr/\A\/tok\/models\?token=(?:rgt1\.)?$fp&note=rgt1\.$fp\z/, 'C: query');
like($c->{x_debug} // '', qr/\Argt1\.$fp\z/, 'C: custom header');

my $d = $by_case{'c-D'}[0] // {};
is($d->{status}, '401', 'D: refused');
like($d->{authorization} // '', qr/\Abearer sk-ant-api03-$fp\z/i, 'D: refused credential masked');

my $h = $by_case{'c-H'}[0] // {};
like($h->{x_custom} // '', qr/\A$fp\z/, 'H: relay_guard_redact_header');
like($h->{arg_session_id} // '', qr/\A$fp\z/, 'H: relay_guard_redact_arg');
like($h->{request_uri} // '', qr/\A\/extra\/models\?session_id=$fp&SESSION_ID=$fp&page=1\z/,
     'H: argument names any case');
my $noextra = RG::Redact::slurp("$DIR/noextra.log") // '';
like($noextra, qr/"x_custom":"\Q$S{custom}\E"/, 'H: without the directive, X-Custom-Secret is logged');
like($noextra, qr/"arg_session_id":"\Q$S{session}\E"/, 'H: without the directive, session_id is logged');

my $i = $by_case{'c-I'}[0] // {};
is($i->{status}, '404', 'I: authenticated');
like($i->{x_debug} // '', qr/\Aecho $fp\z/, 'I: literal upstream key masked in a header');
like($i->{request_uri} // '', qr/\A\/literal\/models\?q=$fp\z/, 'I: ... and in the query');

# relay_guard_redact off: the very same corpus reaches the log (the leak check would fail).
my $off = RG::Redact::slurp("$DIR/off.log") // '';
my $off_combined = RG::Redact::slurp("$DIR/off-combined.log") // '';
for my $n (qw(oat01 admin01 cookie sig_hex ua_key ref_token q_key q_pct bearer_x path_key proxy_b64)) {
    ok(index($off, $S{$n}) >= 0, "off: $n logged as is");
}
ok(index($off_combined, $S{q_key}) >= 0 && index($off_combined, $S{ua_key}) >= 0,
   'off: combined format logs the request line and User-Agent as is');
ok(scalar(RG::Redact::leaks($off)) >= 10, 'off: the leak detector finds the secrets');
unlike($off, qr/\[redacted:/, 'off: nothing masked');

__DATA__

=== TEST 1: the corpus through a pass-through location; the upstream receives it intact
--- request eval
["POST /__mock/reset", "GET $::TARGET_A", "GET /__mock/record"]
--- more_headers eval
$::HEADERS_A
--- error_code eval
[200, 404, 200]
--- response_body_like eval
[qr/ok/, qr/not_found_error/,
 main::record_has($::TARGET_A, %::HA)]
--- no_error_log
[alert]
[crit]

=== TEST 2: a static token presented as x-api-key, pasted into the path, a query and headers
--- request eval
["POST /__mock/reset", "GET $::TARGET_B", "GET /__mock/record"]
--- more_headers eval
$::HEADERS_B
--- error_code eval
[200, 404, 200]
--- response_body_like eval
[qr/ok/, qr/not_found_error/,
 main::record_has($::TARGET_B, 'X-Debug' => "pasted $::S{static} here",
                  'Referer' => "https://x.example.com/?from=$::S{static}",
                  'x-api-key' => $RG::UPSTREAM_KEY)]

=== TEST 3: an rgt1 token as Bearer, in a secret argument, a free argument and a header
--- request eval
["POST /__mock/reset", "GET $::TARGET_C", "GET /__mock/record"]
--- more_headers eval
$::HEADERS_C
--- error_code eval
[200, 404, 200]
--- response_body_like eval
[qr/ok/, qr/not_found_error/, main::record_has($::TARGET_C, 'X-Debug' => $::S{rgt})]

=== TEST 4: a refused credential is masked too (401)
--- request
GET /tok/models?key=whatever-secret-value
--- more_headers eval
"X-Case: c-D\nAuthorization: bearer $::S{api03}\n"
--- error_code: 401

=== TEST 5: same secret, same fingerprint (two requests, one nginx)
--- request eval
["GET /v1/models?key=$::S{api03}", "GET /v1/models?key=$::S{api03}"]
--- more_headers eval
"X-Case: c-FP\nx-api-key: $::S{api03}\nAuthorization: Bearer $::S{ort01}\n"
--- error_code eval
[200, 200]

=== TEST 6: upstream down (502): request, upstream and referrer of the error-log line masked
--- request eval
"GET /down/models?key=$::S{q_key}&apikey=$::S{q_apikey}&note=$::S{api03}"
--- more_headers eval
"X-Case: c-E\n$::HEADERS_E"
--- error_code: 502
--- error_log eval
[qr/connect\(\) failed .*request: "GET \/down\/models\?key=\[redacted:[0-9a-f]{8}\]&apikey=\[redacted:[0-9a-f]{8}\]&note=sk-ant-api03-\[redacted:[0-9a-f]{8}\] HTTP\/1\.1", upstream: "http:\/\/127\.0\.0\.1:1\/down\/models\?key=\[redacted:[0-9a-f]{8}\]&apikey=\[redacted:[0-9a-f]{8}\]&note=sk-ant-api03-\[redacted:[0-9a-f]{8}\]", host: "localhost", referrer: "https:\/\/console\.example\.com\/settings\?page=2&token=\[redacted:[0-9a-f]{8}\]"/]
--- no_error_log
[alert]

=== TEST 7: upstream stalls (504): the "upstream timed out" line is masked
--- request eval
"GET /slow/models?token=$::S{q_token}&sig=$::S{q_sig}"
--- more_headers eval
"X-Case: c-F\nx-mock-delay-ms: 1500\n$::HEADERS_E"
--- error_code: 504
--- error_log eval
[qr/upstream timed out .*request: "GET \/slow\/models\?token=\[redacted:[0-9a-f]{8}\]&sig=\[redacted:[0-9a-f]{8}\] HTTP\/1\.1", upstream: "http:\/\/127\.0\.0\.1:\d+\/slow\/models\?token=\[redacted:[0-9a-f]{8}\]&sig=\[redacted:[0-9a-f]{8}\]".*referrer: "https:\/\/console\.example\.com\/settings\?page=2&token=\[redacted:[0-9a-f]{8}\]"/]

=== TEST 8: (reset the mock)
--- request
POST /__mock/reset
--- error_code: 200

=== TEST 9: proxy_next_upstream: the first server is down, the retry goes to the mock
--- request eval
"GET /retry/models?key=$::S{q_key}&access_token=$::S{q_access}&x=$::S{admin01}"
--- more_headers eval
"X-Case: c-G\nx-api-key: $::S{static}\n$::HEADERS_E"
--- error_code: 404
--- error_log eval
[qr/connect\(\) failed .*request: "GET \/retry\/models\?key=\[redacted:[0-9a-f]{8}\]&access_token=\[redacted:[0-9a-f]{8}\]&x=sk-ant-admin01-\[redacted:[0-9a-f]{8}\] HTTP\/1\.1", upstream: "http:\/\/127\.0\.0\.1:1\/retry\/models\?key=\[redacted:[0-9a-f]{8}\]&/]

=== TEST 10: ... and the retry carried every original value
--- request
GET /__mock/record
--- response_body_like eval
main::record_has("/retry/models?key=$::S{q_key}&access_token=$::S{q_access}&x=$::S{admin01}",
    'Authorization' => "Bearer $::S{api03}", 'Referer' => $::REF_E,
    'User-Agent' => "ua $::S{ua_key}", 'X-Signature' => $::S{sig_hex},
    'x-api-key' => $::S{static})

=== TEST 11: relay_guard_redact_header and relay_guard_redact_arg add names
--- request eval
"GET /extra/models?session_id=$::S{session}&SESSION_ID=$::S{session}&page=1"
--- more_headers eval
"X-Case: c-H\nX-Custom-Secret: $::S{custom}\n"
--- error_code: 404

=== TEST 12: ... which stay readable where they are not configured
--- request eval
"GET /noextra/models?session_id=$::S{session}"
--- more_headers eval
"X-Case: c-H0\nX-Custom-Secret: $::S{custom}\n"
--- error_code: 404

=== TEST 13: an upstream key matching no pattern is masked as a literal
--- request eval
"GET /literal/models?q=$::S{literal_up}"
--- more_headers eval
"X-Case: c-I\nx-api-key: $::S{static}\nX-Debug: echo $::S{literal_up}\n"
--- error_code: 404

=== TEST 14: relay_guard_redact off logs everything as is
--- request eval
"GET /off/models/$::S{path_key}?key=$::S{q_key}&api_key=$::S{q_pct}"
--- more_headers eval
$::HEADERS_A =~ s/X-Case: c-A/X-Case: c-off/r
--- error_code: 404
