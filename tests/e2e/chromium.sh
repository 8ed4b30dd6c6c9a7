# Sourced by the tests that look at a page in headless Chromium: sets $browser
# to Debian's chromium, installing it when running as root with apt-get, or
# exits 77 (skipped, with a message) when it cannot be had. $work must be set.
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "installing chromium from Debian for the screenshot"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > "$work.apt.log" 2>&1 ||
    (apt-get update -qq > /dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium > "$work.apt.log" 2>&1) || true
  browser=$(command -v chromium || true)
fi
[ -n "$browser" ] || { echo "skipping: chromium is not installed and could not be installed"; exit 77; }
# headless, no network beyond what the page loads, a throwaway profile
chromium_flags=(--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$work/profile")
