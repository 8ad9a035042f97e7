#!/usr/bin/env bash
# Rebuilds offline.html, the page `dvc plots show` fills in (.dvc/config: plots.html_template),
# with vega, vega-lite and vega-embed inlined so the plots render with no network. The
# versions are the ones dvc-render's default page loads from a CDN; each package is fetched
# with `npm pack` and checked against its sha256 before its minified build is inlined.
# The packages' LICENSE files are kept beside the page (LICENSE-<package>).
#   bash .dvc/plots/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
packages=(
  "vega 5.20.2 build/vega.min.js d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d"
  "vega-lite 5.2.0 build/vega-lite.min.js f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b"
  "vega-embed 6.18.2 build/vega-embed.min.js 93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b"
)
scripts=""
for entry in "${packages[@]}"; do
  read -r name version build sha <<<"$entry"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  echo "$sha  $work/$name-$version.tgz" | sha256sum -c --quiet
  mkdir -p "$work/$name" && tar xzf "$work/$name-$version.tgz" -C "$work/$name"
  cp "$work/$name/package/LICENSE" "$here/LICENSE-$name"
  # the source-map comment would point the browser's devtools at a file that is not here
  grep -v '^//# sourceMappingURL=' "$work/$name/package/$build" > "$work/$name.js"
  scripts+="<script>/* $name@$version (npm), BSD-3-Clause: LICENSE-$name */"$'\n'"$(cat "$work/$name.js")"$'\n'"</script>"$'\n'
done
{
  cat <<'HEAD'
<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>kiln plots</title>
HEAD
  printf '%s' "$scripts"
  cat <<'TAIL'
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
TAIL
} > "$here/offline.html"
echo "wrote $here/offline.html ($(wc -c < "$here/offline.html") bytes)"
