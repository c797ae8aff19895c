# Sourced by the bench scripts: sign a user in through the real login and consent pages with
# curl, as a browser would, and print the access token.
# Needs: WORK (a scratch directory), PASSWORD, REDIRECT, CHALLENGE, VERIFIER, and the client
# `bench-app` (public, redirect REDIRECT) registered on the server.
# Usage: sign_in ROOT USER SCOPE...
field() { grep -o "name=\"$1\" value=\"[^\"]*\"" "$2" | head -1 | sed 's/.*value="//; s/"$//'; }
sign_in() {
  local root="$1" user="$2"; shift 2
  local jar="$WORK/jar-$user-$$-$RANDOM" scopes=() s
  for s in "$@"; do scopes+=(--data-urlencode "scope=$s"); done
  curl -s -c "$jar" -b "$jar" -G "$root/auth/authorize" \
    --data-urlencode response_type=code --data-urlencode client_id=bench-app --data-urlencode "redirect_uri=$REDIRECT" \
    --data-urlencode "scope=$*" --data-urlencode state=s --data-urlencode "aud=$root/fhir" \
    --data-urlencode "code_challenge=$CHALLENGE" --data-urlencode code_challenge_method=S256 > "$WORK/login.html"
  curl -s -c "$jar" -b "$jar" --data-urlencode "request=$(field request "$WORK/login.html")" \
    --data-urlencode "csrf=$(field csrf "$WORK/login.html")" --data-urlencode "username=$user" \
    --data-urlencode "password=$PASSWORD" "$root/auth/login" > "$WORK/consent.html"
  curl -s -D "$WORK/headers" -o /dev/null -c "$jar" -b "$jar" \
    --data-urlencode "request=$(field request "$WORK/consent.html")" --data-urlencode "csrf=$(field csrf "$WORK/consent.html")" \
    "${scopes[@]}" --data-urlencode decision=approve "$root/auth/consent"
  local code
  code="$(grep -i '^location:' "$WORK/headers" | sed 's/.*[?&]code=\([^&]*\).*/\1/' | tr -d '\r\n')"
  curl -s -d grant_type=authorization_code --data-urlencode "code=$code" --data-urlencode "redirect_uri=$REDIRECT" \
    -d client_id=bench-app --data-urlencode "code_verifier=$VERIFIER" "$root/auth/token" | sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}
