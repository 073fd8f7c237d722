"""Facebook Pages' facts (see `tasks/platforms/specs.py`).

Connect: the manual Facebook Login flow (developers.facebook.com/docs/facebook-login/guides/
advanced/manual-flow): `www.facebook.com/{version}/dialog/oauth`, then
`graph.facebook.com/{version}/oauth/access_token?code=…` for a short-lived user token, extended
with `grant_type=fb_exchange_token` (developers.facebook.com/docs/facebook-login/guides/
access-tokens/get-long-lived). A Page token read with a long-lived user token "will not have an
expiration date" (same page, "Get a Long-lived Page Access Token"): that is what is stored, so
a Page account has nothing to refresh. Granted permissions: `GET /me/permissions`
(developers.facebook.com/docs/graph-api/reference/user/permissions). The Pages and their
tokens: `GET /me/accounts`, cursor-paginated, "next … If not included, this is the last page of
data" (developers.facebook.com/docs/graph-api/results). Permissions: Pages API
getting started (developers.facebook.com/docs/pages-api/getting-started: `pages_show_list`,
`pages_manage_posts`, `pages_read_engagement`) and `read_insights` for Page insights
(developers.facebook.com/docs/permissions).
"""

from tasks.platforms.specs import Endpoint, LoginSpec, PlatformSpec

DOCS = (
    "https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow",
    "https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived",
    "https://developers.facebook.com/docs/graph-api/reference/user/permissions",
    "https://developers.facebook.com/docs/pages-api/getting-started",
    "https://developers.facebook.com/docs/permissions",
    "https://developers.facebook.com/docs/graph-api/results",
)

#: The Facebook Login dialog and code exchange, shared with Instagram's Facebook Login.
DIALOG = Endpoint("https://www.facebook.com", "/{version}/dialog/oauth", served_by="facebook")
CODE_EXCHANGE = Endpoint(
    "https://graph.facebook.com", "/{version}/oauth/access_token", served_by="facebook"
)

SPEC = PlatformSpec(
    name="facebook",
    title="Facebook Pages",
    api_base_url="https://graph.facebook.com",
    logins=(
        LoginSpec(
            name="oauth2",
            authorize=DIALOG,
            token=CODE_EXCHANGE,
            scopes={
                "identity": ("pages_show_list",),
                "text": ("pages_manage_posts", "pages_read_engagement"),
                "images": ("pages_manage_posts",),
                "video": ("pages_manage_posts",),
                "metrics": ("read_insights", "pages_read_engagement"),
            },
            granted_scopes_from="permissions",
            scope_separator=",",
            access_token_lifetime=None,
            refresh=None,
            docs=DOCS,
        ),
    ),
    self_hosted=True,
    docs=DOCS,
)
