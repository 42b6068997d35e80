# Every shipped file in nginx-conf/ passes `nginx -t` on this nginx: the complete nginx.conf (as
# scripts/run lays it out), the TLS server example, each snippet in the smallest config that can
# hold it, and the snippets inside a stock Debian http{} block (no duplicate directives).
# Plain Test::More: it runs `nginx -t` on prefixes it builds, no server is started.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);
use File::Basename qw(basename);
use RG::Conf;
use RG::Server ();

# Under scripts/test --valgrind, `nginx -t` runs under valgrind too (RG_NGINX_WRAPPER).
my $nginx = join ' ', RG::Server::nginx_cmd();
my @modules = split ' ', ($ENV{TEST_NGINX_LOAD_MODULES} // '');
my $confdir = RG::Conf::conf_dir();
my $version = `$nginx -v 2>&1`;
($version) = $version =~ m{nginx/(\S+)};

# A prefix like scripts/run's: conf/nginx.conf, conf/relay-guard/<snippets>, logs/, temp/.
# $main is the text of conf/nginx.conf; upstream => tls|shipped picks the upstream.conf.
sub prefix_with {
    my (%o) = @_;
    my $p = tempdir(CLEANUP => 1);
    make_path("$p/conf/relay-guard", "$p/conf/modules-enabled", "$p/logs", "$p/temp");
    for my $f (glob("$confdir/*.conf")) {
        symlink $f, "$p/conf/relay-guard/" . basename($f) or die $!;
    }
    unlink "$p/conf/relay-guard/upstream.conf";
    my $up;
    if (($o{upstream} // 'tls') eq 'shipped') {
        # The shipped file with only the address swapped: `nginx -t` resolves upstream names and
        # this machine has no DNS. Scheme, host name, key file and system CA bundle stay.
        $up = RG::Conf::slurp("$confdir/upstream.conf");
        $up =~ s/^(\s*server\s+)api\.anthropic\.com:443;/${1}127.0.0.1:443;/m or die;
        RG::Conf::spew("$p/conf/relay-guard/upstream.key", "sk-ant-api03-test\n");
        chmod 0600, "$p/conf/relay-guard/upstream.key";
    } else {
        $up = RG::Conf::upstream_conf(upstream => 'tls');
    }
    RG::Conf::spew("$p/conf/relay-guard/upstream.conf", $up);
    system('cp', "$ENV{TEST_NGINX_DATA_DIR}/keys.json", "$p/conf/relay-guard/keys.json") == 0 or die;
    RG::Conf::spew("$p/conf/modules-enabled/relay-guard.conf",
               join('', map { "load_module $_;\n" } @modules));
    RG::Conf::spew("$p/conf/nginx.conf", $o{main});
    return $p;
}

sub nginx_t {
    my ($name, $p, %o) = @_;
    my $out = `$nginx -t -p $p/ -c $p/conf/nginx.conf 2>&1`;
    my $ok = $? == 0;
    ok($ok, "$name: nginx -t ($version)") or diag($out);
    my @warn = grep { /\[(warn|emerg|alert|crit)\]/ } split /\n/, $out;
    @warn = grep { $_ !~ $o{allow_warn} } @warn if $o{allow_warn};
    is(join("\n", @warn), '', "$name: no warnings");
    return $out;
}

my $shipped_main = RG::Conf::slurp("$confdir/nginx.conf");

# 1. nginx.conf exactly as shipped, with the upstream.conf the tests and scripts/run generate.
nginx_t('nginx.conf', prefix_with(main => $shipped_main));

# The cases below start from this one, so that each tests its own subject only.
my $base_main = $shipped_main;

# 2. ... and with the shipped upstream.conf (api.anthropic.com over verified TLS, key file).
nginx_t('nginx.conf + shipped upstream.conf',
        prefix_with(main => $base_main, upstream => 'shipped'));

# 3. tls-server.conf, included as its header says, with the test certificate in place of the
#    example paths. nginx >= 1.25.1 warns that "listen ... http2" is deprecated: allowed.
{
    my $main = $base_main;
    $main =~ s{#\s*include relay-guard/tls-server\.conf;}{include relay-guard/tls-server.conf;}
        or die 'nginx.conf no longer has the commented tls-server.conf include';
    my $p = prefix_with(main => $main);
    my $tls = RG::Conf::slurp("$confdir/tls-server.conf");
    $tls =~ s{/etc/nginx/relay-guard/tls/fullchain\.pem}{$ENV{TEST_NGINX_CA_DIR}/server.pem} or die;
    $tls =~ s{/etc/nginx/relay-guard/tls/privkey\.pem}{$ENV{TEST_NGINX_CA_DIR}/server.key} or die;
    unlink "$p/conf/relay-guard/tls-server.conf";
    RG::Conf::spew("$p/conf/relay-guard/tls-server.conf", $tls);
    nginx_t('tls-server.conf', $p, allow_warn => qr/"listen \.\.\. http2" directive is deprecated/);
}

# 4. Each snippet in the smallest config that holds it (its own context plus what it names).
my $events = "events { worker_connections 64; }\n";
my %minimal = (
    'http.conf'     => "http { include relay-guard/http.conf; }",
    'upstream.conf' => "http { include relay-guard/upstream.conf; }",
    'proxy.conf'    => "http { include relay-guard/upstream.conf;\n"
                     . "  server { listen 127.0.0.1:1; location / { include relay-guard/proxy.conf; } } }",
    'server.conf'   => "http { include relay-guard/http.conf;\n"
                     . "  server { listen 127.0.0.1:1; include relay-guard/server.conf; } }",
    'locations.conf' => "http { include relay-guard/http.conf; include relay-guard/upstream.conf;\n"
                     . "  server { listen 127.0.0.1:1; include relay-guard/locations.conf; } }",
);
for my $name (sort keys %minimal) {
    nginx_t("$name alone",
            prefix_with(main => "include modules-enabled/*.conf;\nerror_log logs/error.log;\n"
                              . "pid logs/nginx.pid;\n$events$minimal{$name}\n"));
}

# 5. Inside a stock Debian http{} block (gzip, ssl_protocols, access_log already set there): the
#    snippets add no directive that would be a duplicate, which is how scripts/install's users
#    include them.
{
    my $main = <<"_EOC_";
include modules-enabled/*.conf;
error_log logs/error.log;
pid logs/nginx.pid;
events { worker_connections 768; }
http {
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log logs/access.log;
    gzip on;
    include relay-guard/http.conf;
    include relay-guard/upstream.conf;
    server {
        listen 127.0.0.1:1;
        relay_guard any;
        relay_guard_keys relay-guard/keys.json;
        include relay-guard/server.conf;
        include relay-guard/locations.conf;
    }
}
_EOC_
    nginx_t('snippets in a Debian-style http{}', prefix_with(main => $main));
}

# 6. Every .conf in nginx-conf/ was covered above.
is_deeply([sort map { basename($_) } glob("$confdir/*.conf")],
          [sort('nginx.conf', 'tls-server.conf', keys %minimal)], 'every shipped file is checked');

done_testing();
