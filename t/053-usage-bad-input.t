# Hostile usage from the upstream (issue 12, "Bad input"): every usage field comes from the
# upstream, so huge numbers saturate at 2^64-1 and never wrap; negative, non-numeric, duplicate,
# deeply nested, truncated and invalid-UTF-8 values and a "usage" key inside text content give
# sane counts; and none of it crashes a worker, hangs a request or touches another key's
# counters. The bodies are sent byte for byte by the mock (x-mock-raw-body, x-mock-raw-sse).
# Where the issue leaves the right count open (a truncated document), the test accepts each
# sane outcome by name and nothing else.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use RG;
use RG::Server;
use RG::Metrics qw();
use RG::Usage qw();

$ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
$ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';

my $srv = RG::Server->new(name => 'usage-bad', workers => 2);
$srv->start(RG::Usage::http_conf($srv->root));
my $workers = RG::Usage::workers($srv, 2);
my $MAX = $RG::Usage::U64_MAX;

sub snap { RG::Metrics::snap($srv) }
*check = \&RG::Usage::check;
*log_of = \&RG::Usage::log_of;

my $M = 'claude-hostile';

# A Messages API body with the given raw JSON texts (content, usage; model as a JSON string).
sub doc {
    my (%o) = @_;
    my $model = exists $o{model} ? $o{model} : qq("$M");
    return '{"id":"msg_h","type":"message","role":"assistant",'
         . (defined $model ? qq("model":$model,) : '')
         . '"content":' . ($o{content} // '[{"type":"text","text":"ok"}]') . ','
         . '"stop_reason":"end_turn","stop_sequence":null'
         . (defined $o{usage} ? qq(,"usage":$o{usage}) : '') . ($o{tail} // '}');
}

# A request whose 200 body is exactly $raw (JSON) or whose stream is exactly $raw (sse => 1).
sub hostile {
    my ($raw, %o) = @_;
    my $r = RG::Usage::messages($srv, stream => $o{sse} ? 1 : 0,
        mock => { ($o{sse} ? 'x-mock-raw-sse' : 'x-mock-raw-body') => RG::Usage::b64($raw) });
    is($r->{status}, 200, 'the hostile body was relayed: 200');
    is(RG::Metrics::dechunk($r), $raw, '... byte for byte') unless $o{no_body_check};
    return $r;
}

# After each case: alice's ordinary request is counted exactly as ever (the exact set of
# changed series also shows that the hostile request touched no other key).
my $alice_n = 0;
sub alice_still_exact {
    my $b = snap();
    my %u = (input => 100 + $alice_n, output => 200 + $alice_n);
    $alice_n++;
    my $r = RG::Usage::messages($srv, key => 'alice', mock => { 'x-mock-usage' => RG::Usage::usage_json(%u) });
    check($srv, $b, $r, "alice afterwards ($alice_n)", key => 'alice', %u, log => log_of(%u));
}

my $all_before = snap();

subtest 'huge numbers saturate at 2^64-1 and never wrap' => sub {
    my @cases = (
        ['u64 max exactly', 'huge-a', $MAX],
        ['u64 max + 1', 'huge-b', '18446744073709551616'],
        ['40 digits', 'huge-c', '9' x 40],
        ['4000 digits', 'huge-e', '7' x 4000],
    );
    for my $c (@cases) {
        my ($name, $model, $n) = @$c;
        my $b = snap();
        my $r = hostile(doc(model => qq("$model"), usage => qq({"input_tokens":$n,"output_tokens":3})));
        check($srv, $b, $r, $name, model => $model, input => $MAX, output => 3,
              log => log_of(input => $MAX, output => 3, model => $model));
    }
    # Sums saturate: a counter near the top plus 1000 stays at the top.
    my $b = snap();
    my $r = hostile(doc(model => '"huge-d"', usage => '{"input_tokens":18446744073709551000,"output_tokens":1}'));
    check($srv, $b, $r, 'near the top', model => 'huge-d', input => '18446744073709551000', output => 1,
          log => log_of(input => '18446744073709551000', output => 1, model => 'huge-d'));
    for my $i (1, 2) {
        $b = snap();
        $r = hostile(doc(model => '"huge-d"', usage => '{"input_tokens":1000,"output_tokens":1}'));
        check($srv, $b, $r, "plus 1000 ($i)", model => 'huge-d', input => $i == 1 ? 615 : 0, output => 1,
              responses => 1, log => log_of(input => 1000, output => 1, model => 'huge-d'));
    }
    is(RG::Metrics::val(snap(), 'relay_guard_tokens_total', key => 'team-a', model => 'huge-d', type => 'input'),
       $MAX, 'the counter reads 18446744073709551615');
    # Cache writes: the 5m and 1h counts saturate on their own and in $relay_guard_usage_cache_write.
    $b = snap();
    $r = hostile(doc(model => '"huge-f"', usage => '{"input_tokens":1,"cache_creation_input_tokens":10,'
        . qq("cache_creation":{"ephemeral_5m_input_tokens":$MAX,"ephemeral_1h_input_tokens":5},"output_tokens":1})));
    check($srv, $b, $r, 'cache writes at the top', model => 'huge-f', input => 1, output => 1,
          cache_write_5m => $MAX, cache_write_1h => 5,
          log => log_of(input => 1, output => 1, cache_write_5m => $MAX, cache_write_1h => 5, model => 'huge-f'));
    # In a stream, across message_start and message_delta.
    my $raw = RG::Usage::sse(
        [message_start => RG::Usage::message_start(qq({"input_tokens":$MAX,"cache_read_input_tokens":99999999999999999999,"output_tokens":1}), 'huge-s')],
        [message_delta => RG::Usage::message_delta('{"output_tokens":' . ('9' x 30) . '}')],
        [message_stop => '{"type":"message_stop"}']);
    $b = snap();
    $r = hostile($raw, sse => 1);
    check($srv, $b, $r, 'stream at the top', model => 'huge-s', input => $MAX, cache_read => $MAX, output => $MAX,
          stream => 'completed',
          log => log_of(input => $MAX, cache_read => $MAX, output => $MAX, model => 'huge-s', stream => 'completed'));
    alice_still_exact();
};

subtest 'negative and non-numeric values count nothing; the valid fields of the object still count' => sub {
    my @bad = ('-5', '-18446744073709551615', '-0', '"5"', '"12abc"', 'null', 'true', 'false', '[5]',
               '{"n":5}', '""');
    for my $v (@bad) {
        my $b = snap();
        my $r = hostile(doc(usage => qq({"input_tokens":$v,"output_tokens":7,"cache_read_input_tokens":8})));
        check($srv, $b, $r, "input_tokens: $v", model => $M, output => 7, cache_read => 8,
              log => log_of(output => 7, cache_read => 8, model => $M));
    }
    # Numbers a token count is never written as: counted as written, or not at all.
    for my $c (['5.5', 5], ['1e3', 1000], ['5.0', 5], ['5E+0', 5]) {
        my ($v, $n) = @$c;
        my $b = snap();
        my $r = hostile(doc(usage => qq({"input_tokens":$v,"output_tokens":7})));
        RG::Usage::check_one_of($srv, $b, $r, "input_tokens: $v",
            { model => $M, output => 7 }, { model => $M, output => 7, input => $n });
    }
    alice_still_exact();
};

subtest 'duplicate fields and duplicate usage objects: one of the values, never their sum' => sub {
    my @cases = (
        ['input_tokens twice', doc(usage => '{"input_tokens":5,"output_tokens":1,"input_tokens":7}'), 5, 7],
        ['usage twice', doc(usage => '{"input_tokens":5,"output_tokens":1}',
                            tail => ',"usage":{"input_tokens":7,"output_tokens":1}}'), 5, 7],
        ['cache_creation twice', doc(usage => '{"input_tokens":1,"output_tokens":1,'
            . '"cache_creation":{"ephemeral_1h_input_tokens":50},"cache_creation":{"ephemeral_1h_input_tokens":70}}'),
         50, 70],
    );
    for my $c (@cases) {
        my ($name, $raw, $x, $y) = @$c;
        my $field = $name =~ /cache/ ? 'cache_write_1h' : 'input';
        my %base = (model => $M, output => 1, $field eq 'input' ? () : (input => 1));
        my $b = snap();
        my $r = hostile($raw);
        RG::Usage::check_one_of($srv, $b, $r, $name, { %base, $field => $x }, { %base, $field => $y });
    }
    alice_still_exact();
};

subtest 'a "usage" key in text, in nested objects, or in a document that is not a message' => sub {
    my $real = '{"input_tokens":5,"output_tokens":7}';
    my @cases = (
        ['text holding a usage object',
         doc(content => '[{"type":"text","text":"\"usage\":{\"input_tokens\":999999,\"output_tokens\":999999}"}]',
             usage => $real)],
        ['text with escaped backslashes before quotes',
         doc(content => '[{"type":"text","text":"\\\\\"usage\\\\\":{\\\\\"input_tokens\\\\\":999999} \\\\"}]',
             usage => $real)],
        ['text ending in a backslash, then a key-like string',
         doc(content => '[{"type":"text","text":"a\\\\"},{"type":"text","text":"\",\"usage\":{\"input_tokens\":999999}"}]',
             usage => $real)],
        ['a usage object nested in a tool_use input',
         doc(content => '[{"type":"tool_use","id":"tu_1","name":"t","input":{"usage":{"input_tokens":999999,"output_tokens":999999}}}]',
             usage => $real)],
        ['a usage object nested inside the usage object',
         doc(usage => '{"input_tokens":5,"extra":{"input_tokens":999999,"output_tokens":999999},"output_tokens":7}')],
        ['model inside the content, not at the root',
         doc(model => undef, content => '[{"type":"text","text":"x","model":"claude-evil"}]', usage => $real)],
    );
    for my $c (@cases) {
        my ($name, $raw) = @$c;
        my $b = snap();
        my $r = hostile($raw);
        my $model = $name =~ /^model inside/ ? '-' : $M;
        check($srv, $b, $r, $name, model => $model, input => 5, output => 7,
              log => log_of(input => 5, output => 7, model => $model));
    }
    for my $c (['an error document with a usage key', '{"type":"error","error":{"type":"api_error","message":"x"},"usage":{"input_tokens":999999}}'],
               ['a count_tokens answer', '{"input_tokens":999999}'],
               ['a usage key in a document of another type', '{"type":"completion","model":"m","usage":{"input_tokens":999999}}'],
               ['a top-level array', '[{"type":"message","usage":{"input_tokens":999999}}]'],
               ['a JSON string', '"usage"']) {
        my $b = snap();
        my $r = hostile($c->[1]);
        check($srv, $b, $r, $c->[0], log => { in => '-', out => '-', cr => '-', cw => '-' });
    }
    # In streams: text deltas that quote usage or SSE lines, a usage key in other events.
    my $raw = RG::Usage::sse(
        [message_start => RG::Usage::message_start('{"input_tokens":5,"output_tokens":1}')],
        [content_block_delta => RG::Usage::text_delta('\"usage\":{\"output_tokens\":999999}')],
        [content_block_delta => RG::Usage::text_delta('\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":999999}}\n\n')],
        [content_block_delta => '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"},"usage":{"output_tokens":999999}}'],
        [ping => '{"type":"ping","usage":{"input_tokens":999999}}'],
        [content_block_stop => '{"type":"content_block_stop","index":0,"usage":{"input_tokens":999999}}'],
        [message_delta => RG::Usage::message_delta('{"output_tokens":7}')],
        [message_stop => '{"type":"message_stop","usage":{"output_tokens":999999}}']);
    my $b = snap();
    my $r = hostile($raw, sse => 1);
    check($srv, $b, $r, 'stream: usage only from message_start and message_delta', model => 'claude-sonnet-4-5',
          input => 5, output => 7, stream => 'completed',
          log => log_of(input => 5, output => 7, stream => 'completed'));
    alice_still_exact();
};

subtest 'deeply nested JSON: no crash, no hang; the usage after it counted or left alone' => sub {
    my $deep = ('[' x 10000) . (']' x 10000);
    my $deep_obj = ('{"a":' x 5000) . '1' . ('}' x 5000);
    my %u = (model => $M, input => 5, output => 7);
    for my $c (['10000 nested arrays in the content', doc(content => $deep, usage => '{"input_tokens":5,"output_tokens":7}')],
               ['5000 nested objects in the content', doc(content => $deep_obj, usage => '{"input_tokens":5,"output_tokens":7}')]) {
        my $b = snap();
        my $r = hostile($c->[1]);
        RG::Usage::check_one_of($srv, $b, $r, $c->[0], \%u, {});
    }
    my $b = snap();
    my $r = hostile(doc(usage => qq({"input_tokens":5,"x":$deep,"output_tokens":7})));
    RG::Usage::check_one_of($srv, $b, $r, '10000 nested arrays inside usage', \%u,
                            { model => $M, input => 5 }, {});
    $b = snap();
    $r = hostile(doc(usage => ('{"usage":' x 3000) . '{"input_tokens":999999}' . ('}' x 3000)));
    RG::Usage::check_one_of($srv, $b, $r, '3000 usage objects nested in usage', { model => $M, responses => 1 }, {});
    # Unclosed nesting to the end of the body.
    $b = snap();
    $r = hostile('{"type":"message","model":"' . $M . '","usage":{"input_tokens":5},"content":' . ('[' x 20000));
    RG::Usage::check_one_of($srv, $b, $r, '20000 unclosed arrays at the end', { model => $M, input => 5 }, {});
    my $raw = RG::Usage::sse(
        [message_start => '{"type":"message_start","message":{"model":"' . $M . '","content":' . $deep
                          . ',"usage":{"input_tokens":5,"output_tokens":1}}}'],
        [message_delta => RG::Usage::message_delta('{"output_tokens":7}')],
        [message_stop => '{"type":"message_stop"}']);
    $b = snap();
    $r = hostile($raw, sse => 1);
    RG::Usage::check_one_of($srv, $b, $r, 'stream: 10000 nested arrays in message_start',
        { %u, stream => 'completed' }, { model => $M, output => 7, stream => 'completed' },
        { stream => 'completed' });
    alice_still_exact();
};

subtest 'truncated JSON: what was read is counted or nothing; never garbage' => sub {
    my $full = doc(usage => '{"input_tokens":5,"cache_read_input_tokens":6,"output_tokens":7}');
    my $at = index($full, '"output_tokens"');
    for my $cut ($at, $at + 10, $at + 16, length($full) - 2, length($full) - 1) {
        my $raw = substr($full, 0, $cut);
        my $b = snap();
        my $r = hostile($raw);
        my @ok = ({}, { model => $M, input => 5, cache_read => 6 });
        push @ok, { model => $M, input => 5, cache_read => 6, output => 7 } if $cut > $at + 16;
        RG::Usage::check_one_of($srv, $b, $r, "body cut at byte $cut of " . length($full), @ok);
    }
    my $b = snap();
    my $r = hostile(substr($full, 0, index($full, '5,"cache_read')));
    RG::Usage::check_one_of($srv, $b, $r, 'cut before a number', {}, { model => $M, responses => 1 });
    $b = snap();
    $r = hostile(substr($full, 0, index($full, '5,"cache_read') + 1));
    RG::Usage::check_one_of($srv, $b, $r, 'cut right after a number', {}, { model => $M, input => 5 },
                            { model => $M, responses => 1 });
    # A stream whose message_start data line is cut off, then the connection drops.
    my $ms = RG::Usage::message_start('{"input_tokens":5,"cache_read_input_tokens":6,"output_tokens":1}');
    my $raw = "event: message_start\ndata: " . substr($ms, 0, index($ms, '"output_tokens"'));
    $b = snap();
    $r = RG::Usage::messages($srv, stream => 1,
                             mock => { 'x-mock-raw-sse' => RG::Usage::b64($raw), 'x-mock-sse-cut' => 0 });
    RG::Usage::check_one_of($srv, $b, $r, 'stream cut inside message_start',
        { stream => 'upstream_cut' }, { model => 'claude-sonnet-4-5', input => 5, cache_read => 6, stream => 'upstream_cut' });
    # A truncated message_start followed by a good message_delta: the delta's fields count.
    $raw = "event: message_start\ndata: " . substr($ms, 0, index($ms, '"output_tokens"')) . "\n\n"
         . RG::Usage::sse([message_delta => RG::Usage::message_delta('{"output_tokens":7}')],
                          [message_stop => '{"type":"message_stop"}']);
    $b = snap();
    $r = hostile($raw, sse => 1);
    RG::Usage::check_one_of($srv, $b, $r, 'truncated message_start, good message_delta',
        { model => 'claude-sonnet-4-5', output => 7, stream => 'completed' },
        { model => '-', output => 7, stream => 'completed' },
        { model => 'claude-sonnet-4-5', input => 5, cache_read => 6, output => 7, stream => 'completed' });
    alice_still_exact();
};

subtest 'invalid UTF-8 and hostile model names' => sub {
    my $real = '{"input_tokens":5,"output_tokens":7}';
    my $b = snap();
    my $r = hostile(doc(content => qq([{"type":"text","text":"\xff\xfe\xc0\x80\xed\xa0\x80"}]), usage => $real));
    check($srv, $b, $r, 'invalid UTF-8 in the text', model => $M, input => 5, output => 7,
          log => log_of(input => 5, output => 7, model => $M));
    $b = snap();
    $r = hostile(doc(usage => qq({"input_tokens\xff":999999,"output_tokens":7,"\xc0input_tokens":999999})));
    check($srv, $b, $r, 'invalid UTF-8 in usage keys', model => $M, output => 7,
          log => log_of(output => 7, model => $M));
    # Model names outside [A-Za-z0-9._:@/+-] or longer than 64 bytes are model="other", and,
    # however many there are, take no series of their own.
    my @bad = (qq("claude\xff"), qq("\xc3\xa9t\xc3\xa9"), '"claude sonnet"', '"a\"b"', '"\u0063laude"',
               '"' . ('x' x 65) . '"', '"' . ('y' x 5000) . '"', '"cl<aude>"', '"a,b=\"c\""', '"a\nb"',
               map({ qq("bad model $_") } 1 .. 20));
    for my $m (@bad) {
        $b = snap();
        $r = hostile(doc(model => $m, usage => $real));
        (my $shown = substr($m, 0, 40)) =~ s/[^\x20-\x7e]/?/g;
        check($srv, $b, $r, "model $shown", model => 'other', input => 5, output => 7,
              log => log_of(input => 5, output => 7, model => 'other'));
    }
    # Not a string: no model (or other); never a series of its own.
    for my $m ('5', 'null', '["claude"]', '{"id":"claude"}', '""') {
        $b = snap();
        $r = hostile(doc(model => $m, usage => $real));
        RG::Usage::check_one_of($srv, $b, $r, "model $m", { model => '-', input => 5, output => 7 },
                                { model => 'other', input => 5, output => 7 });
    }
    my $x64 = 'm' x 64;
    $b = snap();
    $r = hostile(doc(model => qq("$x64"), usage => $real));
    check($srv, $b, $r, 'a 64-byte model name is still valid', model => $x64, input => 5, output => 7,
          log => log_of(input => 5, output => 7, model => $x64));
    $b = snap();
    $r = hostile(doc(model => '"claude-fresh-1"', usage => $real));
    check($srv, $b, $r, 'after all those, a new valid model still gets its own series', model => 'claude-fresh-1',
          input => 5, output => 7, log => log_of(input => 5, output => 7, model => 'claude-fresh-1'));
    my $raw = RG::Usage::sse(
        [message_start => RG::Usage::message_start('{"input_tokens":5,"output_tokens":1}', "claude\xff\xfe")],
        [content_block_delta => RG::Usage::text_delta("\xff\xc0\xaf")],
        [message_delta => RG::Usage::message_delta('{"output_tokens":7}')],
        ["mess\xffage_delta" => RG::Usage::message_delta('{"output_tokens":999999}')],
        ["message_delta\xff" => RG::Usage::message_delta('{"output_tokens":999999}')],
        [message_stop => '{"type":"message_stop"}']);
    $b = snap();
    $r = hostile($raw, sse => 1);
    check($srv, $b, $r, 'stream with invalid UTF-8 in the model, a text and an event name', model => 'other',
          input => 5, output => 7, stream => 'completed',
          log => log_of(input => 5, output => 7, model => 'other', stream => 'completed'));
    alice_still_exact();
};

subtest 'no other key was touched, no worker crashed' => sub {
    my $a = snap();
    my $c = RG::Usage::changes($all_before, $a);
    my @foreign = grep { !/key="(team-a|alice)"/ } keys %$c;
    is_deeply(\@foreign, [], 'only team-a (hostile) and alice (ordinary) series changed');
    my $alice_in = RG::Metrics::delta($all_before, $a, 'relay_guard_tokens_total', key => 'alice',
                                      model => 'claude-sonnet-4-5', type => 'input');
    my $want = 0;
    $want += 100 + $_ for 0 .. $alice_n - 1;
    is($alice_in, $want, "alice's input tokens are exactly her $alice_n requests'");
    RG::Usage::no_crash($srv, $workers, 'after the hostile bodies');
};

$srv->stop;
done_testing();
