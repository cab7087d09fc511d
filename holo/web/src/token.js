// The access token comes in the link's fragment (https://host:port/#token=...): browsers
// never send a fragment to a server, so no server or proxy log sees it. The page takes it
// out of the address bar at once (a screenshot or a shared screen must not show it) and
// keeps it for this tab only (sessionStorage: a reload still works, a new tab needs the link).

const KEY = "holo.token";

function decodeClaims(token) {
  const [prefix, payload] = token.split(".");
  if (prefix !== "holo1" || !payload) return null;
  try {
    const text = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(text);
    if (typeof claims.role !== "string" || typeof claims.case !== "string") return null;
    return { role: claims.role, caseId: claims.case, expires: Number(claims.exp) * 1000 };
  } catch {
    return null;
  }
}

/** {token, role, caseId, expires} from the fragment or this tab's storage; null if none. */
export function takeToken(location = window.location, history = window.history, storage = window.sessionStorage) {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  let token = params.get("token");
  if (token) {
    storage.setItem(KEY, token);
    params.delete("token"); // the rest of the fragment (#replay=...) stays
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  } else {
    token = storage.getItem(KEY);
  }
  if (!token) return null;
  const claims = decodeClaims(token);
  if (claims === null) return { token, role: "", caseId: "", expires: 0, invalid: true };
  return { token, ...claims };
}
