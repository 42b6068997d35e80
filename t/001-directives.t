# Configuration errors fail `nginx -t` with an [emerg] that names the file, the line and the fix.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: bad relay_guard value names the allowed values, file and line
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location /v1/ {
        relay_guard yes;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "yes" in "relay_guard" directive, it must be "off", "signature", "token" or "any" in \S+nginx\.conf:\d+/

=== TEST 2: duplicate relay_guard
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location /v1/ {
        relay_guard off;
        relay_guard token;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard" directive is duplicate in \S+nginx\.conf:\d+/

=== TEST 3: signature mode without a zone
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location /v1/ {
        relay_guard signature;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*keep their state in shared memory: add "relay_guard_zone NAME:SIZE;" to the http block \(needed by \S+nginx\.conf:\d+\)/

=== TEST 4: a mode without keys
--- http_config
    relay_guard_zone rg:1m;
--- config
    location /v1/ {
        relay_guard token;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard" needs "relay_guard_keys FILE;" at the same level or above in \S+nginx\.conf:\d+/

=== TEST 5: keys file with invalid JSON names the file, line and column
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/bad-keys.json;
--- config
    location /v1/ { relay_guard token; }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_keys": \S+bad-keys\.json: invalid JSON at line \d+ column \d+.* in \S+nginx\.conf:\d+/

=== TEST 6: keys file that does not exist
--- http_config
    relay_guard_keys /nonexistent/keys.json;
--- config
    location /v1/ { relay_guard token; }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_keys": cannot read \/nonexistent\/keys\.json: No such file/

=== TEST 7: key entry with a short secret
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/short-secret-keys.json;
--- config
    location /v1/ { relay_guard token; }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*key #1: id "short": secret #1 is shorter than 16 bytes/

=== TEST 8: zone too small, and bad zone syntax
--- http_config
    relay_guard_zone rg:1k;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*zone "rg" is too small: it needs at least \d+k \(metrics for keys=256 models=16 plus nonce slots\) in \S+nginx\.conf:\d+/

=== TEST 9: zone without a size
--- http_config
    relay_guard_zone rg;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid zone "rg" in "relay_guard_zone", expected NAME:SIZE such as relay_guard:10m/

=== TEST 10: zone outside the http block
--- config
    location /v1/ { relay_guard_zone rg:1m; }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_zone" directive is not allowed here/

=== TEST 11: bad clock skew
--- http_config
    relay_guard_clock_skew soon;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "soon" in "relay_guard_clock_skew" directive, expected a time such as 30s or 1h/

=== TEST 12: bad dry_run flag
--- http_config
    relay_guard_dry_run maybe;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "maybe" in "relay_guard_dry_run" directive, it must be "on" or "off"/

=== TEST 13: bad zone parameters: models out of range, repeated, unknown
--- http_config
    relay_guard_zone rg:1m models=0;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid parameter "models=0" in "relay_guard_zone", expected keys=N \(1\.\.1048576: key ids with their own metrics series\) or models=N \(1\.\.1024: model names with their own token series\), each at most once in \S+nginx\.conf:\d+/

=== TEST 14: a zone parameter given twice
--- http_config
    relay_guard_zone rg:1m keys=4 keys=8;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid parameter "keys=8" in "relay_guard_zone".*each at most once/

=== TEST 15: an unknown zone parameter
--- http_config
    relay_guard_zone rg:1m model=4;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid parameter "model=4" in "relay_guard_zone"/

=== TEST 16: bad relay_guard_accounting flag, and a duplicate
--- http_config
    relay_guard_accounting yes;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "yes" in "relay_guard_accounting" directive, it must be "on" or "off"/

=== TEST 17: relay_guard_accounting twice at one level
--- http_config
    relay_guard_accounting on;
    relay_guard_accounting off;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_accounting" directive is duplicate in \S+nginx\.conf:\d+/

=== TEST 18: a valid configuration at every level starts
--- http_config
    relay_guard_zone rg:1m models=4 keys=8;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
    relay_guard off;
    relay_guard_accounting off;
--- config
    relay_guard token;
    relay_guard_accounting on;
    location /v1/ {
        relay_guard signature;
        relay_guard_clock_skew 1m;
        proxy_pass http://127.0.0.1:$TEST_NGINX_MOCK_PORT;
    }
--- request
GET /v1/models
--- error_code: 401

=== TEST 19: relay_guard_usage needs a relay_guard mode
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location = /relay-guard/usage {
        relay_guard_usage;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_usage" answers each client about its own key, so it needs "relay_guard signature\|token\|any;" in its location or above \(\S+nginx\.conf:\d+\)/

=== TEST 20: relay_guard_usage and relay_guard_metrics cannot share a location
--- http_config
    relay_guard_zone rg:1m keys=8;
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location = /x {
        relay_guard token;
        relay_guard_metrics;
        relay_guard_usage;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_usage" and "relay_guard_metrics" cannot share a location: each is the location's whole answer in \S+nginx\.conf:\d+/

=== TEST 21: relay_guard_usage twice
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/keys.json;
--- config
    location = /x {
        relay_guard token;
        relay_guard_usage;
        relay_guard_usage;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_usage" directive is duplicate in \S+nginx\.conf:\d+/

=== TEST 22: bad relay_guard_limits flag
--- http_config
    relay_guard_limits maybe;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "maybe" in "relay_guard_limits" directive, it must be "on" or "off" in \S+nginx\.conf:\d+/

=== TEST 23: relay_guard_state_file interval out of range
--- http_config
    relay_guard_state_file limits-state.json 2d;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "2d" in "relay_guard_state_file" directive, expected an interval from 1s to 1d, such as 10s in \S+nginx\.conf:\d+/

=== TEST 24: relay_guard_state_file interval that is not a time
--- http_config
    relay_guard_state_file limits-state.json soon;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*invalid value "soon" in "relay_guard_state_file" directive, expected an interval/

=== TEST 25: relay_guard_state_file twice
--- http_config
    relay_guard_state_file a.json;
    relay_guard_state_file b.json;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_state_file" directive is duplicate in \S+nginx\.conf:\d+/

=== TEST 26: relay_guard_state_file only in http
--- config
    relay_guard_state_file a.json;
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_state_file" directive is not allowed here/

=== TEST 27: keys with limits need the zone, even in token mode
--- http_config
    relay_guard_keys $TEST_NGINX_DATA_DIR/limits-keys.json;
--- config
    location /v1/ {
        relay_guard token;
    }
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*keys with limits keep their state in shared memory: add "relay_guard_zone NAME:SIZE;" to the http block \(needed by \S+nginx\.conf:\d+\)/

=== TEST 28: limits, usage and the state file together start
--- http_config
    relay_guard_zone rg:1m keys=8;
    relay_guard_keys $TEST_NGINX_DATA_DIR/limits-keys.json;
    # Outside the servroot: the master writes it at exit, and Test::Nginx removes the servroot
    # for the next file meanwhile.
    relay_guard_state_file /tmp/rg-t001-limits-state.json 1s;
    relay_guard_limits off;
--- config
    relay_guard token;
    relay_guard_limits on;
    location = /relay-guard/usage {
        relay_guard_usage;
    }
--- request
GET /relay-guard/usage
--- error_code: 401
--- response_body_like: "authentication_error"

=== TEST 29: relay_guard_state_file needs the zone
--- http_config
    relay_guard_state_file /tmp/rg-t001-limits-state.json;
--- config
--- must_die
--- suppress_stderr
--- error_log eval
qr/\[emerg\] .*"relay_guard_state_file" saves the token budgets kept in the shared zone: add "relay_guard_zone NAME:SIZE;" to the http block/
