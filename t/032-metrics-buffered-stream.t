# SSE completeness with proxy_buffering on (nginx's default) and a slow client: nginx spools
# the stream to a proxy temp file and hands the body filters file-backed buffers. The client
# still receives a complete stream (message_stop included), so it must count as completed,
# with sendfile off (the buffers are read back into memory) and on (nginx-conf/nginx.conf has
# it on: the spooled part goes from the file to the socket and never passes through memory).
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use IO::Socket::INET;
use RG;
use RG::Server;
use RG::Metrics qw();

my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT not set';
my $data = $ENV{TEST_NGINX_DATA_DIR} or plan skip_all => 'TEST_NGINX_DATA_DIR not set';

my $srv = RG::Server->new(name => 'metrics-buffered', workers => 1);
my $root = $srv->root;
$srv->start(<<"EOC");
    relay_guard_zone rg:1m;
    relay_guard_keys $data/keys.json;
    proxy_temp_path $root/proxy_temp;
    server {
        listen 127.0.0.1:PORT sndbuf=16k;
        location / {
            relay_guard any;
            proxy_http_version 1.1;
            proxy_buffering on;
            proxy_buffer_size 4k;
            proxy_buffers 4 4k;
            proxy_pass http://127.0.0.1:$mock;
            location /sendfile/ {
                sendfile on;
                proxy_pass http://127.0.0.1:$mock/;
            }
        }
        location = /metrics {
            relay_guard_metrics;
        }
    }
EOC

# A client that waits before reading, so nginx (with a 16 KiB send buffer) must spool.
sub slow_stream {
    my ($target, $events, $wait) = @_;
    my $body = RG::Metrics::stream_body();
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->port, Timeout => 10)
        or die "connect: $!";
    print $s "POST $target HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
           . "Authorization: Bearer $RG::STATIC_TOKEN\r\nx-mock-sse-gap-ms: 0\r\n"
           . "x-mock-sse-events: $events\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    select(undef, undef, undef, $wait);
    local $/;
    return <$s> // '';
}

for my $case (['sendfile off', '/v1/messages'], ['sendfile on', '/sendfile/v1/messages']) {
    my ($name, $target) = @$case;
    my $log_before = length $srv->error_log;
    my $b = RG::Metrics::snap($srv);
    my $resp = slow_stream($target, 20_000, 2);
    like($resp, qr{^HTTP/1\.1 200}, "$name: 200");
    like($resp, qr/event: message_stop/, "$name: the client received the whole stream, message_stop included");
    like(substr($srv->error_log, $log_before), qr/an upstream response is buffered to a temporary file/,
         "$name: nginx spooled it to a temp file (the case under test)");
    my $a = RG::Metrics::snap($srv);
    is_deeply(RG::Metrics::changed($b, $a, 'relay_guard_streams_total'),
              { 'relay_guard_streams_total{key="team-a",outcome="completed"}' => 1 },
              "$name: counted as a completed stream");
}

$srv->stop;
done_testing();
