# ci-fleet: download one file over HTTPS, check its pinned sha256, install it.
# Arguments: URL SHA256 DESTINATION MODE
set -eu
work=/var/lib/ci-fleet/bootstrap
install -d -m 0700 "$work"
curl --fail --silent --show-error --location --proto '=https' --max-time 300 --output "$work/download" "$1"
echo "$2  $work/download" | sha256sum --check --quiet
install -m "$4" "$work/download" "$3"
rm -f "$work/download"
