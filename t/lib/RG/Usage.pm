package RG::Usage;
# Helpers for the usage-accounting tests (t/05x-usage-*.t), on top of RG::Server and
# RG::Metrics: one nginx configuration with every kind of location the tests need, requests to
# /v1/messages as any test key with the mock's usage control headers, the access-log line of one
# request (the $relay_guard_usage_* variables), and the exact set of usage series one response
# must change. Every check compares two scrapes, so tests do not depend on each other's traffic.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use Math::BigInt;
use MIME::Base64 qw(encode_base64);
use Time::HiRes qw(sleep time);
use Test::More ();
use RG;
use RG::Metrics ();

our @TOKEN_TYPES = qw(input output cache_write_5m cache_write_1h cache_read);
our $U64_MAX = '18446744073709551615';

# The families a response's usage can change, and the stream families.
our @USAGE_FAMILIES = qw(relay_guard_tokens_total relay_guard_web_search_requests_total
                         relay_guard_usage_responses_total);
our @STREAM_FAMILIES = qw(relay_guard_streams_total relay_guard_stream_errors_total);

# One field per variable; a tag header ties a line to its request. key and model never hold
# spaces (model names are [A-Za-z0-9._:@/+-], an invalid one is logged as "other").
our $LOG_FORMAT = 'tag=$http_x_test_tag key=$relay_guard_key_id model=$relay_guard_model'
    . ' in=$relay_guard_usage_input out=$relay_guard_usage_output'
    . ' cr=$relay_guard_usage_cache_read cw=$relay_guard_usage_cache_write'
    . ' stream=$relay_guard_stream status=$status';

# The http block: zone (with $o{zone_args}, e.g. "models=2"), keys, the usage log, and
#   /            unbuffered (proxy_buffering off), as the shipped config streams
#   /buffered/   proxy_buffering on with 4 KiB buffers: a slow client makes nginx spool to
#                proxy_temp_path, sendfile off (the file is read back through memory)
#   /sendfile/   the same with sendfile on (the spooled part never passes through memory)
#   /off/        relay_guard_accounting off (stream outcomes still counted)
#   /guard-off/  relay_guard off (no verified key)
#   = /metrics
# sndbuf=16k keeps the socket buffer small, so a client that does not read makes nginx spool.
sub http_conf {
    my ($root, %o) = @_;
    my $mock = $ENV{TEST_NGINX_MOCK_PORT} or die 'TEST_NGINX_MOCK_PORT not set';
    my $data = $ENV{TEST_NGINX_DATA_DIR} or die 'TEST_NGINX_DATA_DIR not set';
    my $zone = join ' ', 'rg:1m', grep { defined } $o{zone_args};
    my $up = "http://127.0.0.1:$mock";
    my $log_format = $LOG_FORMAT =~ s/'/\\'/gr;
    return <<"EOC";
    relay_guard_zone $zone;
    relay_guard_keys $data/keys.json;
    log_format usage '$log_format';
    proxy_temp_path $root/proxy_temp;
    server {
        listen 127.0.0.1:PORT reuseport sndbuf=16k;
        access_log $root/logs/usage.log usage;
        large_client_header_buffers 4 64k;
        location / {
            relay_guard any;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_read_timeout 10s;
            proxy_pass $up;
        }
        location /buffered/ {
            relay_guard any;
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_buffer_size 4k;
            proxy_buffers 4 4k;
            proxy_pass $up/;
        }
        location /sendfile/ {
            relay_guard any;
            sendfile on;
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_buffer_size 4k;
            proxy_buffers 4 4k;
            proxy_pass $up/;
        }
        location /off/ {
            relay_guard any;
            relay_guard_accounting off;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_pass $up/;
        }
        location /guard-off/ {
            relay_guard off;
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_pass $up/;
        }
        location = /metrics {
            relay_guard off;
            relay_guard_metrics;
        }
    }
EOC
}

my $tags = 0;
sub new_tag { sprintf 't%d-%d', $$, ++$tags }

# A Messages API body; stream => 1 asks for a stream, model => the request's model.
sub body {
    my (%o) = @_;
    my $model = $o{model} // 'claude-sonnet-4-5';
    return qq({"model":"$model","max_tokens":16,) . ($o{stream} ? '"stream":true,' : '')
         . '"messages":[{"role":"user","content":"hi"}]}';
}

# The request head for one call: credentials of $key (team-a: its static token; alice, bob:
# a signature over $path and $body), the tag, and the mock's control headers.
sub headers {
    my ($key, $path, $body, $tag, %mock) = @_;
    my %extra = ('content-type' => 'application/json', 'x-test-tag' => $tag, %mock);
    return $key eq 'team-a' ? RG::Metrics::token_headers(undef, %extra)
         : $key eq '-' ? join('', map { "$_: $extra{$_}\n" } sort keys %extra)
         : RG::Metrics::signed_headers($key, 'POST', $path, $body, %extra);
}

# POST /v1/messages (or $o{path}) as $o{key} (default team-a). $o{mock}: control headers.
# Returns the response of RG::Server::request plus {tag}.
sub messages {
    my ($srv, %o) = @_;
    my $key = $o{key} // 'team-a';
    my $path = $o{path} // '/v1/messages';
    my $body = $o{body} // body(%o);
    my $tag = new_tag();
    my $r = $srv->request('POST', $path, headers($key, $path, $body, $tag, %{ $o{mock} || {} }), $body);
    $r->{tag} = $tag;
    $r->{decoded} = RG::Metrics::dechunk($r);
    return $r;
}

sub b64 { encode_base64($_[0], '') }

# An SSE body from [event name, data text] pairs, as Anthropic frames it.
sub sse {
    return join '', map { "event: $_->[0]\ndata: $_->[1]\n\n" } @_;
}

# A message_start event's data with the given usage JSON text (undef: no usage key).
sub message_start {
    my ($usage, $model) = @_;
    $model //= 'claude-sonnet-4-5';
    return qq({"type":"message_start","message":{"id":"msg_raw","type":"message","role":"assistant",)
         . qq("model":"$model","content":[],"stop_reason":null,"stop_sequence":null)
         . (defined $usage ? qq(,"usage":$usage) : '') . '}}';
}

sub message_delta {
    my ($usage) = @_;
    return '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null}'
         . (defined $usage ? qq(,"usage":$usage) : '') . '}';
}

sub text_delta {
    my ($text) = @_;
    return qq({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"$text"}});
}

# Sends the request of messages(%o) on a new connection and returns ($socket, $tag) without
# reading: for slow clients, clients that leave, and streams running side by side.
sub open_request {
    my ($srv, %o) = @_;
    my $key = $o{key} // 'team-a';
    my $path = $o{path} // '/v1/messages';
    my $body = $o{body} // body(%o);
    my $tag = new_tag();
    my $h = headers($key, $path, $body, $tag, %{ $o{mock} || {} });
    $h =~ s/\n/\r\n/g;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or die "connect: $!";
    $s->autoflush(1);
    print $s "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n$h"
           . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    return ($s, $tag);
}

# Reads from $s until $re matches what arrived, EOF, or $timeout; returns what arrived.
sub read_until {
    my ($s, $re, $timeout) = @_;
    my $sel = IO::Select->new($s);
    my $deadline = time + ($timeout // 10);
    my $got = '';
    while (time < $deadline) {
        last if defined $re && $got =~ $re;
        last unless $sel->can_read($deadline - time);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $got .= $buf;
    }
    return $got;
}

# The access-log line of the request tagged $tag, parsed into {field => value}; waits for it
# (nginx writes it in the LOG phase, which can come after the client saw the response end).
# Returns undef after $timeout seconds.
sub log_line {
    my ($srv, $tag, $timeout) = @_;
    return $srv->tagged_log_line('usage.log', $tag, $timeout);
}

# after - before, exact for integers of any size (counters saturate at 2^64-1, beyond what a
# Perl number holds exactly), as a string.
sub exact_delta {
    my ($x, $y) = @_;
    return $y - $x if grep { !/^[0-9]+$/ } $x, $y;
    return (Math::BigInt->new($y) - Math::BigInt->new($x))->bstr;
}

# Every usage and stream series that changed between two snapshots: {series id => delta}.
sub changes {
    my ($b, $a) = @_;
    my %c;
    for my $id (keys %{ { %$b, %$a } }) {
        next unless grep { index($id, "$_\{") == 0 } @USAGE_FAMILIES, @STREAM_FAMILIES;
        my $d = exact_delta($b->{$id} // 0, $a->{$id} // 0);
        $c{$id} = $d if $d ne '0';
    }
    return \%c;
}

# The changes one response must make. %w: key, model, input, output, cache_write_5m,
# cache_write_1h, cache_read, web_search, responses (default 1 when any count is given, else
# 0), stream (an outcome), error_type (with stream => 'error_event').
sub want {
    my (%w) = @_;
    my %k = (key => $w{key} // 'team-a');
    my %km = (%k, model => $w{model} // 'claude-sonnet-4-5');
    my %c;
    my $any = 0;
    for my $t (@TOKEN_TYPES) {
        next unless $w{$t};
        $c{RG::Metrics::series_id('relay_guard_tokens_total', %km, type => $t)} = $w{$t};
        $any = 1;
    }
    if ($w{web_search}) {
        $c{RG::Metrics::series_id('relay_guard_web_search_requests_total', %km)} = $w{web_search};
        $any = 1;
    }
    my $responses = $w{responses} // $any;
    $c{RG::Metrics::series_id('relay_guard_usage_responses_total', %km)} = $responses if $responses;
    $c{RG::Metrics::series_id('relay_guard_streams_total', %k, outcome => $w{stream})} = 1 if $w{stream};
    $c{RG::Metrics::series_id('relay_guard_stream_errors_total', %k, type => $w{error_type})} = 1
        if $w{error_type};
    return \%c;
}

# Test: the response tagged $r->{tag} changed exactly the series of want(%w) since $before,
# and its log line has the fields of $w{log} (a hash; omitted fields are not checked).
# Returns the log line.
sub check {
    my ($srv, $before, $r, $name, %w) = @_;
    my $log_want = delete $w{log};
    my $line = log_line($srv, $r->{tag});
    Test::More::ok($line, "$name: access-log line written") or return;
    my $want = want(%w);
    # The module records metrics in the first LOG-phase handler, before the access log: the
    # line's presence means the counts are in. A short grace period turns a late count into a
    # clear failure instead of a flaky pass.
    my $got;
    for (1 .. 10) {
        $got = changes($before, RG::Metrics::snap($srv));
        last if Test::More::eq_hash($got, $want);
        sleep 0.1;
    }
    Test::More::is_deeply($got, $want, "$name: exactly the expected series changed")
        or Test::More::diag(Test::More::explain($got));
    if ($log_want) {
        Test::More::is_deeply({ map { $_ => $line->{$_} } keys %$log_want }, $log_want,
                              "$name: log line " . join(' ', map { "$_=$log_want->{$_}" } sort keys %$log_want));
    }
    return $line;
}

# Test: like check, for responses whose right count the issue leaves open (a truncated
# document, a number written as 1e3): the changes must equal one of the alternatives, each a
# hash of want() arguments. Returns the index of the one that matched, or undef.
sub check_one_of {
    my ($srv, $before, $r, $name, @alts) = @_;
    my $line = log_line($srv, $r->{tag});
    Test::More::ok($line, "$name: access-log line written") or return;
    my @want = map { want(%$_) } @alts;
    my $got = changes($before, RG::Metrics::snap($srv));
    my ($i) = grep { Test::More::eq_hash($got, $want[$_]) } 0 .. $#want;
    Test::More::ok(defined $i, "$name: the changes are one of " . scalar(@want) . ' sane outcomes')
        or Test::More::diag(Test::More::explain({ got => $got, alternatives => \@want }));
    Test::More::note("$name: outcome " . ($i + 1) . ' of ' . scalar(@want)) if defined $i;
    return $i;
}

# The log fields for a response that reported the given counts (cw = both cache writes).
sub log_of {
    my (%w) = @_;
    return { in => $w{input} // 0, out => $w{output} // 0, cr => $w{cache_read} // 0,
             cw => saturating_add($w{cache_write_5m} // 0, $w{cache_write_1h} // 0),
             model => $w{model} // 'claude-sonnet-4-5', stream => $w{stream} // '-' };
}

# a + b as u64 arithmetic that saturates, as a string.
sub saturating_add {
    my $sum = Math::BigInt->new($_[0]) + Math::BigInt->new($_[1]);
    return ($sum > Math::BigInt->new($U64_MAX) ? $U64_MAX : $sum->bstr);
}

# Anthropic's usage object as JSON text: input, output, cache_read, cache_write_5m,
# cache_write_1h (the total cache_creation_input_tokens is their sum), web_search.
sub usage_json {
    my (%u) = @_;
    my @f;
    push @f, qq("input_tokens":$u{input}) if defined $u{input};
    if (defined $u{cache_write_5m} || defined $u{cache_write_1h}) {
        my ($w5, $w1) = ($u{cache_write_5m} // 0, $u{cache_write_1h} // 0);
        push @f, '"cache_creation_input_tokens":' . (Math::BigInt->new($w5) + $w1)->bstr;
    }
    push @f, qq("cache_read_input_tokens":$u{cache_read}) if defined $u{cache_read};
    if (defined $u{cache_write_5m} || defined $u{cache_write_1h}) {
        push @f, sprintf('"cache_creation":{"ephemeral_5m_input_tokens":%s,"ephemeral_1h_input_tokens":%s}',
                         $u{cache_write_5m} // 0, $u{cache_write_1h} // 0);
    }
    push @f, qq("output_tokens":$u{output}) if defined $u{output};
    push @f, qq("server_tool_use":{"web_search_requests":$u{web_search}}) if defined $u{web_search};
    push @f, '"service_tier":"standard"';
    return '{' . join(',', @f) . '}';
}

# The worker pids once all $n workers run. RG::Server::start returns when nginx listens, which
# is before the daemonized master has written its pid file and forked the workers.
sub workers {
    my ($srv, $n) = @_;
    for (1 .. 200) {
        my @w = eval { $srv->worker_pids };
        return \@w if @w == $n;
        sleep 0.05;
    }
    die 'nginx did not start ' . $n . ' workers: ' . $srv->error_log;
}

# Test: no worker crashed since the server started (same workers, nothing in the error log).
sub no_crash {
    my ($srv, $workers, $name) = @_;
    Test::More::is_deeply(workers($srv, scalar @$workers), $workers, "$name: the same workers still run");
    my $log = $srv->error_log;
    Test::More::unlike($log, qr/signal \d+|exited on|\[(alert|emerg|crit)\]|panic/,
                       "$name: no crash, alert or panic in the error log");
}

1;
