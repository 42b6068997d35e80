# relay_guard_redact against a generated corpus (scripts/redact_corpus.py): random secrets of
# every kind (Anthropic keys in any letter case, rgs1_ and opaque static tokens, rgt1 tokens,
# the upstream key as a literal matching no pattern) in every field nginx or a common log
# format prints, percent-encoded in several ways, sent to locations that proxy, fail upstream
# (502), miss a static file (404 with log_not_found on) and check tokens (some refused: 401 and
# relay-guard's own info line); then every byte of
# every access and error log is searched for any 12-byte slice of the secret part of any
# secret, as logged, percent-decoded and in any letter case.
#
# The seed is printed; REDACT_CORPUS_SEED=N reruns one, REDACT_KEEP=1 keeps the logs.
# A control server with redaction off gets the first requests of the same corpus: the checker
# must find their secrets there, or it proves nothing.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use JSON::PP ();
use File::Temp ();
use RG::Server;

my $root = $ENV{PWD};
my $py = "$root/scripts/redact_corpus.py";
my $mock = $ENV{TEST_NGINX_MOCK_PORT} or plan skip_all => 'TEST_NGINX_MOCK_PORT is not set (run through scripts/test)';
my $seed = $ENV{REDACT_CORPUS_SEED} // int(rand(2**31));
my $count = $ENV{REDACT_CORPUS_COUNT} // 300;
my $dir = File::Temp::tempdir('rg-corpus-XXXXXX', TMPDIR => 1, CLEANUP => !$ENV{REDACT_KEEP});
chmod 0755, $dir;
mkdir "$dir/$_" for qw(logs logs-off www www/static);
diag("corpus seed $seed ($count requests), files in $dir");

sub run_py {
    my @cmd = ('python3', $py, @_);
    my $out = `@cmd`;
    return $out;
}

my $gen = run_py('gen', '--dir', $dir, '--seed', $seed, '--count', $count);
like($gen, qr/^seed $seed: \d+ requests \($count placed\)/, 'corpus generated') or diag($gen);
my $corpus = JSON::PP->new->decode(do { local $/; open my $f, '<', "$dir/corpus.json" or die; <$f> });
my $total = @{ $corpus->{requests} };
my %at;
$at{$_->{location}}++ for @{ $corpus->{requests} };

my $off = RG::Server->free_port;
my $locations = <<"_EOC_";
        location /v1/ {
            relay_guard off;
            # Caches \$host and a map of it before the LOG phase.
            proxy_set_header X-Host-Copy \$rg_host_copy;
            proxy_pass http://127.0.0.1:$mock;
        }
        # Nothing listens on port 1: 502 and a "connect() failed" line with request:,
        # upstream: and host: fields.
        location /down/ {
            relay_guard off;
            proxy_pass http://127.0.0.1:1;
        }
        # No such file: 404 and an "open() ... failed" line quoting the decoded path.
        location /static/ {
            relay_guard off;
            root $dir/www;
            log_not_found on;
        }
        location /tok/ {
            relay_guard token;
            proxy_set_header x-api-key \$relay_guard_upstream_key;
            proxy_set_header Authorization "";
            # Caches \$host, \$tenant and \$remote_user before the LOG phase.
            proxy_set_header X-Host \$host;
            proxy_set_header X-Tenant \$tenant;
            proxy_set_header X-User \$remote_user;
            proxy_pass http://127.0.0.1:$mock;
        }
_EOC_

my $http = <<"_EOC_";
    relay_guard_zone rg:1m;
    relay_guard_keys $dir/keys.json;
    relay_guard_upstream_key_file $dir/upstream-key;
    log_format corpus escape=json '{"case":"\$http_x_case","status":"\$status",'
        '"request":"\$request","request_uri":"\$request_uri","args":"\$args",'
        '"query_string":"\$query_string","uri":"\$uri","document_uri":"\$document_uri",'
        '"host":"\$host","http_host":"\$http_host","remote_user":"\$remote_user",'
        '"server_name":"\$server_name","tenant":"\$tenant","filename":"\$request_filename",'
        '"authorization":"\$http_authorization","x_api_key":"\$http_x_api_key",'
        '"cookie":"\$http_cookie","cookie_session":"\$cookie_session",'
        '"user_agent":"\$http_user_agent","referer":"\$http_referer","x_debug":"\$http_x_debug",'
        '"x_original_url":"\$http_x_original_url","x_forwarded_cookie":"\$http_x_forwarded_cookie",'
        '"x_original_headers":"\$http_x_original_headers","x_auth_echo":"\$http_x_auth_echo",'
        '"arg_q":"\$arg_q","arg_key":"\$arg_key","arg_token":"\$arg_token",'
        '"host_copy":"\$rg_host_copy","upstream_key":"\$relay_guard_upstream_key",'
        '"upstream_key_copy":"\$rg_key_copy"}';
    map \$host \$rg_host_copy { default \$host; }
    map \$host \$rg_key_copy { default \$relay_guard_upstream_key; }
    error_log $dir/logs/error.log info;

    server {
        listen 127.0.0.1:PORT default_server;
        server_name relay.test;
        relay_guard_redact on;
        access_log $dir/logs/access.json corpus;
        access_log $dir/logs/combined.log combined;
$locations
    }
    # \$tenant comes from the request: a capture of the Host header.
    server {
        listen 127.0.0.1:PORT;
        server_name ~^(?<tenant>.+)\\.tenant\\.test\$;
        relay_guard_redact on;
        access_log $dir/logs/access.json corpus;
        access_log $dir/logs/combined.log combined;
$locations
    }
    # The control: the same configuration with redaction off.
    server {
        listen 127.0.0.1:$off default_server;
        relay_guard_redact off;
        access_log $dir/logs-off/access.json corpus;
        error_log $dir/logs-off/error.log info;
$locations
    }
_EOC_

my $srv = RG::Server->new(name => 'redact-corpus', workers => 1);
$srv->start($http);
my $port = $srv->port;

my $sent = JSON::PP->new->decode(run_py('send', '--dir', $dir, '--port', $port) || '{}');
is($sent->{sent}, $total, "all $total requests sent");
my %st = %{ $sent->{statuses} || {} };
is(join(',', sort grep { !/^(200|401|404|502)$/ } keys %st), '', 'every answer is what its location gives (200, 401, 404, 502)')
    or diag(explain(\%st));
my $off_n = 40;
run_py('send', '--dir', $dir, '--port', $off, '--only', $off_n);
$srv->stop;

my @logs = map { "$dir/logs/$_" } qw(access.json combined.log error.log);
push @logs, $srv->root . '/logs/error.log';
my $res = JSON::PP->new->decode(run_py('check', '--dir', $dir, @logs) || '{}');
my $c = $res->{counts} || {};
is($c->{access_cases}, $total, 'every request has its access-log line');
my $cut = grep { $_->{field} eq 'cut-line' } @{ $corpus->{requests} };
cmp_ok($c->{upstream} // 0, '>=', $at{'/down/'}, 'error-log lines with an upstream: field (502)');
cmp_ok($c->{open_failed} // 0, '>=', $at{'/static/'} - $cut,
       'error-log lines quoting a missing file (404), besides those cut short');
cmp_ok($c->{request} // 0, '>=', $at{'/down/'} + $at{'/static/'} - $cut,
       'error-log lines with a request: field');
cmp_ok($c->{host} // 0, '>=', $at{'/down/'} + $at{'/static/'} - $cut, 'error-log lines with a host: field');
cmp_ok($c->{cut} // 0, '>=', $cut / 2, 'error-log lines nginx cut at its 2048-byte buffer');
cmp_ok($c->{cut_in_secret} // 0, '>=', 3, '... some of them inside the presented token');
cmp_ok($res->{masks} // 0, '>=', $count, 'masks are present');
is($res->{leak_count}, 0, "seed $seed: no 12-byte slice of any secret in any log byte")
    or diag(join "\n", map { "  leak ($_->{file}, $_->{secret}, '$_->{window}'): $_->{line}" }
                @{ $res->{leaks} || [] });

# $remote_user keeps the user name with its secrets masked, whether something evaluated it
# before the LOG phase (/tok/ sends it upstream) or only the log does (the Authorization
# header it decodes is masked by then).
my %field = map { ("c-$_->{n}" => $_->{field}) } @{ $corpus->{requests} };
my (%users, $basic, %key_shown);
open my $acc, '<', "$dir/logs/access.json" or die "access.json: $!";
while (my $l = <$acc>) {
    my $e = eval { JSON::PP->new->decode($l) } or next;
    # $relay_guard_upstream_key named in the log_format, directly and through a map.
    $key_shown{$e->{upstream_key}}++;
    $key_shown{$e->{upstream_key_copy}}++;
    next unless ($field{$e->{case}} // '') eq 'basic-user';
    $basic++;
    my $loc = $e->{request} =~ m{^GET (?:http://[^/]*)?(/[a-z0-9]+/)} ? $1 : '?';
    $users{$loc}++ if $e->{remote_user} =~ /\[redacted:[0-9a-f]{8}\]/;
}
my @shown = keys %key_shown;
ok(@shown == 1 && $shown[0] =~ /\A\[redacted:[0-9a-f]{8}\]\z/,
   '$relay_guard_upstream_key in a log_format is masked whole, evaluated before or not')
    or diag(explain(\%key_shown));
ok($basic, "basic-user requests logged ($basic)");
ok($users{'/v1/'} && $users{'/tok/'}, '$remote_user shows the masked user name, cached or not')
    or diag(explain(\%users));

my $ctl = JSON::PP->new->decode(
    run_py('check', '--dir', $dir, "$dir/logs-off/access.json", "$dir/logs-off/error.log") || '{}');
cmp_ok($ctl->{leak_count} // 0, '>=', $off_n, 'control (redaction off): the checker finds the secrets');

done_testing();
