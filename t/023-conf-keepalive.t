# The upstream side of the shipped config (nginx-conf/upstream.conf, proxy.conf), against the
# mock over verified TLS: requests reuse a few pooled keep-alive connections, and what reaches
# the upstream is exactly the client's request minus its relay credentials plus the real key.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use RG::Conf;
use RG;

repeat_each(1);
no_shuffle();
no_root_location();
add_block_preprocessor(\&RG::Conf::preprocessor);

our $TOKEN = $RG::STATIC_TOKEN;
our $BODY = '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}';
our $STREAM = '{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}';
our $KEY = do { local (@ARGV, $/) = "$ENV{TEST_NGINX_DATA_DIR}/upstream-key"; my $k = <>; $k =~ s/\s+\z//; $k };

sub header_of {
    my ($rec, $name) = @_;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $rec->{headers} };
    return @v ? join(',', @v) : undef;
}

run_tests();

# --- against the nginx of the last block (still running) -------------------------------------
SKIP: {
    # Under valgrind Test::Nginx stops nginx after the last block, to collect its report.
    skip "needs the last block's nginx still running (not under valgrind)", 1
        if $ENV{TEST_NGINX_USE_VALGRIND};
    RG::Conf::mock_reset(tls => 1);
    my @status;
    for my $i (1 .. 50) {
        # A new client connection each time: upstream reuse must not depend on the client's.
        my $res = RG::Conf::http('POST', '/v1/messages', ['x-api-key' => $TOKEN, 'content-type' => 'application/json'],
                             $i % 5 ? $BODY : $STREAM);
        push @status, $res->{status};
    }
    is(scalar(grep { $_ == 200 } @status), 50, 'keepalive: 50 sequential requests (every 5th streaming) answered 200');
    my $rec = RG::Conf::mock_record(tls => 1);
    is(scalar @{ $rec->{requests} }, 50, 'keepalive: the upstream saw exactly 50 requests');
    my %ids = map { $_->{connection} => 1 } @{ $rec->{requests} };
    cmp_ok(scalar(keys %ids), '<=', 2, 'keepalive: ... over ' . scalar(keys %ids) . ' upstream connection(s) (<= 2)');
    cmp_ok($rec->{connections}, '<=', 2, "keepalive: the upstream accepted $rec->{connections} TLS connection(s)");
    is(scalar(grep { $_->{http_version} ne 'HTTP/1.1' } @{ $rec->{requests} }), 0, 'keepalive: HTTP/1.1 upstream');

    # What one request looks like upstream.
    RG::Conf::mock_reset(tls => 1);
    my $res = RG::Conf::http('POST', '/v1/messages?beta=true',
        ['Authorization' => "Bearer $TOKEN", 'x-api-key' => 'sk-ant-client-must-not-pass',
         'anthropic-version' => '2023-06-01', 'anthropic-beta' => 'prompt-caching-2024-07-31,files-api-2025-04-14',
         'anthropic-dangerous-direct-browser-access' => 'true', 'X-Custom' => 'kept',
         'content-type' => 'application/json', 'Accept-Encoding' => 'gzip, deflate'], $BODY);
    is($res->{status}, 200, 'headers: request relayed');
    my ($r) = @{ RG::Conf::mock_record(tls => 1)->{requests} };
    is($r->{target}, '/v1/messages?beta=true', 'headers: target and query untouched');
    ok($r->{tls}, 'headers: over TLS');
    is(header_of($r, 'x-api-key'), $KEY, 'headers: x-api-key is the injected upstream key (once)');
    is(header_of($r, 'Authorization'), undef, 'headers: client Authorization removed');
    is(header_of($r, 'Host'), 'localhost', 'headers: Host is the upstream name');
    is(header_of($r, 'anthropic-version'), '2023-06-01', 'headers: anthropic-version untouched');
    is(header_of($r, 'anthropic-beta'), 'prompt-caching-2024-07-31,files-api-2025-04-14', 'headers: anthropic-beta untouched');
    is(header_of($r, 'anthropic-dangerous-direct-browser-access'), 'true', 'headers: other anthropic-* untouched');
    is(header_of($r, 'X-Custom'), 'kept', 'headers: other headers untouched');
    # /v1/messages asks the upstream for identity encoding: relay-guard reads each response's
    # usage as it passes, which it cannot in a gzip stream.
    is(header_of($r, 'Accept-Encoding'), undef, 'headers: no Accept-Encoding upstream (usage must be readable)');
    is(header_of($r, 'Connection'), undef, 'headers: no "Connection: close" upstream (keep-alive)');
    is($r->{body_len}, length $BODY, 'headers: body intact');
    like($res->{headers}{'anthropic-ratelimit-requests-limit'} // '', qr/^\d+$/, 'headers: anthropic-ratelimit-* reach the client');
    like($res->{headers}{'request-id'} // '', qr/^req_mock_/, 'headers: request-id reaches the client');

    # A signed request: none of the four signature headers reach the upstream.
    RG::Conf::mock_reset(tls => 1);
    my $sig = RG::sign_headers(method => 'POST', target => '/v1/messages', body => $BODY);
    my @sig = map { split /: /, $_, 2 } split /\n/, $sig;
    $res = RG::Conf::http('POST', '/v1/messages', [@sig, 'content-type' => 'application/json'], $BODY);
    is($res->{status}, 200, 'signed: request relayed');
    ($r) = @{ RG::Conf::mock_record(tls => 1)->{requests} };
    is(join(',', grep { defined header_of($r, $_) } qw(X-Key-Id X-Timestamp X-Nonce X-Signature Authorization)), '',
       'signed: no signature header reaches the upstream');
    is(header_of($r, 'x-api-key'), $KEY, 'signed: the upstream key is injected');
}

__DATA__

=== TEST 1: models list through the shipped /v1/models location
--- request
GET /v1/models
--- more_headers eval
"x-api-key: $::TOKEN\nanthropic-version: 2023-06-01\n"
--- error_code: 200
--- response_body_like: "type":"model"
--- no_error_log
[error]
[warn]

=== TEST 2: count_tokens
--- request eval
"POST /v1/messages/count_tokens\n$::BODY"
--- more_headers eval
"x-api-key: $::TOKEN\ncontent-type: application/json\n"
--- error_code: 200
--- response_body_like: ^\{"input_tokens":\d+\}$

=== TEST 3: a path the relay does not serve: Anthropic-shaped 404 from the relay itself
--- request
GET /v1/complete
--- more_headers eval
"x-api-key: $::TOKEN\n"
--- error_code: 404
--- response_headers
Content-Type: application/json
--- response_body: {"type":"error","error":{"type":"not_found_error","message":"relay: this path is not relayed"}}

=== TEST 4: no credentials: the module's 401, untouched by the relay's error pages
--- request
GET /v1/models
--- error_code: 401
--- response_body_like: ^\{"type":"error","error":\{"type":"authentication_error"
