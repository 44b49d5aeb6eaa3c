import { LOGOUT_PATH, type AuthUser } from '../plumbing/auth.js';
import { BOARD_PATH } from '../server.js';
import { operatorChrome } from './actions.js';
import { assetUrl, type Assets } from './assets.js';
import { html } from './html.js';
import type { Page } from './parts.js';

/** Who is looking, as the auth hook found them. */
export interface Viewer {
  user: AuthUser;
  via: 'basic' | 'session' | 'anonymous';
  /** The lifeboat_csrf cookie, for the log-out form (app.js refreshes it from document.cookie on submit). */
  csrf?: string;
}

/** A whole HTML document: the header (nav, user, log out), the operator's dialog and job panel, the page. */
export function layout(page: Page, viewer: Viewer, assets: Assets): string {
  const { user } = viewer;
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${page.title} · Lifeboat</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${assetUrl(assets, 'style.css')}">
<script src="${assetUrl(assets, 'app.js')}" defer></script>
</head><body>
<header class="top"><a class="brand" href="/">Lifeboat</a>
<nav><a href="/">Overview</a> <a href="${BOARD_PATH}">Queues</a></nav>
<span class="user" data-role="${user.role}">${user.name} (${user.role})</span>
${viewer.via === 'session' && html`<form class="logout" method="post" action="${LOGOUT_PATH}"><input type="hidden" name="_csrf" value="${viewer.csrf ?? ''}"><button type="submit">Log out</button></form>`}
</header>
${user.role === 'operator' && operatorChrome()}
<main>
${page.body}
</main>
</body></html>
`.text;
}
