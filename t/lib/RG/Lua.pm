package RG::Lua;
# Debian's lua module (libnginx-mod-http-lua, OpenResty's core) beside relay-guard, for the
# tests that load both in a chosen order (t/025, t/042). The lua module is built for Debian's
# own nginx: 1.22 on the system, or 1.26 in the Debian 13 root that scripts/debian13-nginx
# enters (the module sits at the same path inside the root).
use strict;
use warnings;
use Test::Nginx::Socket ();

my $LUA_DIR = '/usr/lib/nginx/modules';
our @LUA = ("$LUA_DIR/ndk_http_module.so", "$LUA_DIR/ngx_http_lua_module.so");
our @RG_MODULES = grep { $_ } split /\s+/, ($ENV{TEST_NGINX_LOAD_MODULES} // '');

# Plans the file (no_plan), or skips it with the reason; then leaves module loading to each
# block (Test::Nginx's own load_module lines would fix one order).
sub plan_or_skip {
    my $bin = $ENV{TEST_NGINX_BINARY} // '';
    my $fs = $bin =~ m{^(.*)/scripts/debian13-nginx$} ? "$1/target/debian13/root" : '';
    if ($bin ne '/usr/sbin/nginx' && !$fs) {
        Test::Nginx::Socket::plan(skip_all => 'the lua module is built for Debian\'s nginx only (system or debian13)');
    } elsif (grep { !-f "$fs$_" } @LUA) {
        Test::Nginx::Socket::plan(skip_all => "libnginx-mod-http-lua is not installed (@LUA)");
    } else {
        Test::Nginx::Socket::plan('no_plan');
    }
    $Test::Nginx::Util::LoadModules = '';
}

# The main_config lines that load lua before relay-guard, or after it.
sub lua_first { join '', map { "load_module $_;\n" } @LUA, @RG_MODULES }
sub lua_last  { join '', map { "load_module $_;\n" } @RG_MODULES, @LUA }

1;
