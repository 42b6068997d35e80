# Usage accounting of non-streaming /v1/messages responses (issue 12): the usage object the mock
# upstream sent, counted exactly per key and model in relay_guard_tokens_total and its sibling
# families, and the same numbers in the $relay_guard_usage_* and $relay_guard_model variables of
# the access log. Every check compares two scrapes and requires that exactly the expected series
# changed, so a count under the wrong key or model, or a count twice, fails too.
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

my $srv = RG::Server->new(name => 'usage-json', workers => 2);
$srv->start(RG::Usage::http_conf($srv->root));
my $workers = RG::Usage::workers($srv, 2);

sub snap { RG::Metrics::snap($srv) }
*check = \&RG::Usage::check;
*log_of = \&RG::Usage::log_of;
*usage_json = \&RG::Usage::usage_json;

my %full = (input => 1234, output => 567, cache_write_5m => 8910, cache_write_1h => 1112,
            cache_read => 131415, web_search => 3);

subtest 'every field of a full usage object, per key and model' => sub {
    for my $key (qw(team-a alice bob)) {
        my $b = snap();
        my $r = RG::Usage::messages($srv, key => $key,
            mock => { 'x-mock-usage' => usage_json(%full), 'x-mock-model' => 'claude-opus-4-1' });
        is($r->{status}, 200, "$key: 200");
        like($r->{decoded}, qr/"cache_read_input_tokens":131415/, "$key: the client got the usage unchanged");
        check($srv, $b, $r, $key, key => $key, model => 'claude-opus-4-1', %full,
              log => { %{ log_of(%full, model => 'claude-opus-4-1') }, key => $key });
    }
};

subtest 'the mock default payload (Anthropic shape, zero cache fields)' => sub {
    my $b = snap();
    my $r = RG::Usage::messages($srv);
    is($r->{status}, 200, '200');
    # The mock counts ~4 prompt characters per token: [{"role":"user","content":"hi"}] plus "" is
    # 34 characters, 8 tokens; output is the 6 words of its text.
    like($r->{decoded}, qr/"usage":\{"input_tokens":8,"cache_creation_input_tokens":0,/, 'mock sent input 8');
    like($r->{decoded}, qr/"output_tokens":6,/, '... and output 6');
    check($srv, $b, $r, 'default', input => 8, output => 6, log => log_of(input => 8, output => 6));
};

subtest 'cache writes: 5m and 1h apart, the old shape as 5m, cache reads' => sub {
    my @cases = (
        ['only 1h writes', { input => 3, output => 2, cache_write_1h => 40000 }],
        ['only 5m writes', { input => 3, output => 2, cache_write_5m => 777 }],
        ['cache read only', { input => 5, output => 9, cache_read => 2048 }],
        ['both TTLs and a read', { input => 1, output => 1, cache_write_5m => 11, cache_write_1h => 22,
                                   cache_read => 33 }],
    );
    for my $c (@cases) {
        my ($name, $u) = @$c;
        my $b = snap();
        my $r = RG::Usage::messages($srv, mock => { 'x-mock-usage' => usage_json(%$u) });
        is($r->{status}, 200, "$name: 200");
        check($srv, $b, $r, $name, %$u, log => log_of(%$u));
    }
    # Before the TTL breakdown existed the API sent only the total; the API's default TTL is 5m.
    my $b = snap();
    my $r = RG::Usage::messages($srv, mock => {
        'x-mock-usage' => '{"input_tokens":10,"cache_creation_input_tokens":300,"output_tokens":4}' });
    check($srv, $b, $r, 'total without breakdown', input => 10, output => 4, cache_write_5m => 300,
          log => log_of(input => 10, output => 4, cache_write_5m => 300));
};

subtest 'web search requests' => sub {
    my $b = snap();
    my %u = (input => 100, output => 50, web_search => 7);
    my $r = RG::Usage::messages($srv, mock => { 'x-mock-usage' => usage_json(%u) });
    check($srv, $b, $r, 'web search', %u, log => log_of(%u));
};

subtest 'responses add up; a zero usage is a usage response with no tokens' => sub {
    my $b = snap();
    my @r = map { RG::Usage::messages($srv, mock => { 'x-mock-usage' => usage_json(input => 21, output => 13) }) } 1 .. 5;
    RG::Usage::log_line($srv, $_->{tag}) for @r;
    my $got = RG::Usage::changes($b, snap());
    is_deeply($got, RG::Usage::want(input => 105, output => 65, responses => 5), 'five responses: 5 x (21, 13)')
        or diag(explain($got));
    $b = snap();
    my $r = RG::Usage::messages($srv, mock => { 'x-mock-usage' => '{"input_tokens":0,"output_tokens":0}' });
    check($srv, $b, $r, 'zero usage', responses => 1, log => log_of());
};

subtest 'models: each its own series; a response without a model is model="-"' => sub {
    for my $m (qw(claude-haiku-4-5 claude-3-7-sonnet-20250219 vendor/model:v1.2@x+y)) {
        my $b = snap();
        my $r = RG::Usage::messages($srv, mock => { 'x-mock-usage' => usage_json(input => 4, output => 2),
                                                   'x-mock-model' => $m });
        check($srv, $b, $r, "model $m", model => $m, input => 4, output => 2,
              log => log_of(input => 4, output => 2, model => $m));
    }
    my $b = snap();
    my $r = RG::Usage::messages($srv, model => 'claude-haiku-4-5');
    check($srv, $b, $r, "the request's model by default", model => 'claude-haiku-4-5', input => 8, output => 6,
          log => log_of(input => 8, output => 6, model => 'claude-haiku-4-5'));
    my $raw = '{"id":"msg_1","type":"message","role":"assistant","content":[],'
            . '"usage":{"input_tokens":17,"output_tokens":19}}';
    $b = snap();
    $r = RG::Usage::messages($srv, mock => { 'x-mock-raw-body' => RG::Usage::b64($raw) });
    is($r->{body}, $raw, 'no model: the body reached the client unchanged');
    check($srv, $b, $r, 'no model', model => '-', input => 17, output => 19,
          log => log_of(input => 17, output => 19, model => '-'));
};

subtest 'what is not counted: no usage, errors, other endpoints, accounting off' => sub {
    my $b = snap();
    my $r = RG::Usage::messages($srv, mock => { 'x-mock-usage' => 'none' });
    unlike($r->{decoded}, qr/usage/, 'the mock sent no usage');
    check($srv, $b, $r, 'no usage object',
          log => { in => '-', out => '-', cr => '-', cw => '-', model => 'claude-sonnet-4-5', stream => '-' });
    for my $status (400, 429, 529) {
        $b = snap();
        $r = RG::Usage::messages($srv, mock => { 'x-mock-status' => $status });
        is($r->{status}, $status, "upstream $status");
        check($srv, $b, $r, "upstream $status",
              log => { in => '-', out => '-', cr => '-', cw => '-', model => '-', stream => '-' });
    }
    $b = snap();
    $r = RG::Usage::messages($srv, path => '/v1/messages/count_tokens');
    like($r->{decoded}, qr/^\{"input_tokens":\d+\}$/, 'count_tokens answered {"input_tokens":N}');
    check($srv, $b, $r, 'count_tokens', log => { in => '-', out => '-', model => '-' });
    $b = snap();
    $r = RG::Usage::messages($srv, path => '/off/v1/messages',
                             mock => { 'x-mock-usage' => usage_json(%full) });
    like($r->{decoded}, qr/"input_tokens":1234/, 'relay_guard_accounting off: the usage reached the client');
    check($srv, $b, $r, 'relay_guard_accounting off',
          log => { in => '-', out => '-', cr => '-', cw => '-', model => '-', key => 'team-a' });
};

# The issue: "For every response relayed for a verified key (signature or token mode), parse
# the Anthropic usage object". A relay_guard off location verifies nobody.
subtest 'relay_guard off: no verified key, so no usage counted' => sub {
    my $b = snap();
    my $r = RG::Usage::messages($srv, key => '-', path => '/guard-off/v1/messages',
                                mock => { 'x-mock-usage' => usage_json(%full) });
    is($r->{status}, 200, 'relay_guard off: 200');
    check($srv, $b, $r, 'relay_guard off', log => { in => '-', out => '-' });
};

subtest 'a 2 MB body with usage in its middle, over many buffers, spooled to a temp file' => sub {
    # 1 MB of text, the usage, then a 1 MB root field: nginx reads it in hundreds of 4 KiB
    # buffers, and a client that waits makes it spool the middle (where the usage is) to a
    # file, which the body filter then sees as file-backed buffers.
    for my $path ('/v1/messages', '/buffered/v1/messages', '/sendfile/v1/messages') {
        my $log_before = length $srv->error_log;
        my $b = snap();
        my $body = RG::Usage::body(model => 'claude-opus-4-1');
        my $tag = RG::Usage::new_tag();
        my $h = RG::Usage::headers('team-a', $path, $body, $tag, 'x-mock-text-bytes' => 1_000_000,
                                   'x-mock-pad-bytes' => 1_000_000, 'x-mock-usage' => usage_json(%full));
        $h =~ s/\n/\r\n/g;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
            or die "connect: $!";
        print $s "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$h"
               . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
        select(undef, undef, undef, 1);   # read nothing for a second: nginx must buffer
        my $resp = do { local $/; <$s> } // '';
        ok(length($resp) > 2_000_000, "$path: the client got the whole body (" . length($resp) . ' bytes)');
        like(substr($resp, 900_000, 200_000), qr/"cache_read_input_tokens":131415/, "$path: ... usage in its middle");
        if ($path ne '/v1/messages') {
            like(substr($srv->error_log, $log_before), qr/an upstream response is buffered to a temporary file/,
                 "$path: nginx spooled it to a temp file (the case under test)");
        }
        check($srv, $b, { tag => $tag }, "$path, 2 MB", model => 'claude-opus-4-1', %full,
              log => log_of(%full, model => 'claude-opus-4-1'));
    }
};

RG::Usage::no_crash($srv, $workers, 'after all');
$srv->stop;
done_testing();
