/* RenderMart live updates: an enhancement, never a requirement. Every page works without
 * this script (forms post, pages reload); with it, elements marked
 * data-live-src="<same-origin server-sent events URL>" follow their stream:
 *
 *   event: listing  data: a Listing ({id, price, status, ...})   on the market grid
 *     card [data-listing-id=id]: its [data-field="price"] follows the price; a card whose
 *     status is no longer "open" is removed; a new open listing is added to a grid marked
 *     data-live-insert="newest|price" (its card fetched from /market/{id}/card, placed
 *     first or by data-price) and otherwise shows the grid's [data-live-notice] ("New
 *     listings: reload"), an aria-live="polite" region.
 *   event: job      data: a Job ({id, status, error, ...})       on a generation
 *     the element's [data-field="status"] follows the status; on "succeeded" or "failed"
 *     the stream is closed and the page reloaded (it then shows the result).
 *   event: order    data: an Order ({id, status, ...})           on an order page
 *     when the status differs from the element's data-status, the stream is closed and
 *     the page reloaded (it then shows the new status and its history).
 *   event: wallet   data: {balance, held, available, currency}  on the wallet summary
 *     [data-field="balance|held|available"] show the amounts (minor units) as "12.50 USD".
 *
 * An element with data-live-fallback="reload" reloads the page every few seconds when its
 * stream cannot be opened at all (what the page's <noscript> refresh does without script).
 * Served with script-src 'self' and connect-src 'self': no inline script, no other origin.
 */
(function () {
  "use strict";

  if (!("EventSource" in window) || !("querySelectorAll" in document)) {
    return;
  }

  var FALLBACK_RELOAD_MS = 3000;

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (e) {
      return null;
    }
  }

  /* 1250, "USD", 2 -> "12.50 USD" (integers only: money is never a float here). */
  function formatMoney(minor, currency, exponent) {
    if (typeof minor !== "number" || !isFinite(minor)) {
      return null;
    }
    var digits = typeof exponent === "number" ? exponent : 2;
    var sign = minor < 0 ? "-" : "";
    var abs = String(Math.abs(Math.trunc(minor)));
    if (digits === 0) {
      return sign + abs + " " + currency;
    }
    while (abs.length <= digits) {
      abs = "0" + abs;
    }
    return sign + abs.slice(0, -digits) + "." + abs.slice(-digits) + " " + currency;
  }

  function exponentOf(el) {
    var raw = el.getAttribute("data-exponent");
    var n = raw === null ? 2 : parseInt(raw, 10);
    return isNaN(n) ? 2 : n;
  }

  function setText(root, field, text) {
    if (text === null || text === undefined) {
      return;
    }
    var nodes = root.querySelectorAll('[data-field="' + field + '"]');
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = text;
    }
  }

  function findCard(grid, id) {
    var cards = grid.querySelectorAll("[data-listing-id]");
    for (var i = 0; i < cards.length; i++) {
      if (cards[i].getAttribute("data-listing-id") === id) {
        return cards[i];
      }
    }
    return null;
  }

  function showNotice(root) {
    var notice = root.querySelector("[data-live-notice]") ||
      document.querySelector("[data-live-notice]");
    if (notice && notice.hidden) {
      notice.hidden = false;
    }
  }

  /* Adds a new open listing's card, rendered by the server, to a grid that takes them. */
  function insertCard(grid, listing) {
    var order = grid.getAttribute("data-live-insert");
    if ((order !== "newest" && order !== "price") || !("fetch" in window)) {
      showNotice(grid);
      return;
    }
    fetch("/market/" + encodeURIComponent(listing.id) + "/card", { credentials: "same-origin" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html || findCard(grid, listing.id)) {
          return;
        }
        var holder = document.createElement("template");
        holder.innerHTML = html.trim();
        var node = holder.content.firstElementChild;
        if (!node || !node.hasAttribute("data-listing-id")) {
          return;
        }
        var before = grid.firstElementChild;
        if (order === "price") {
          before = null;
          var cards = grid.querySelectorAll("[data-listing-id]");
          for (var i = 0; i < cards.length; i++) {
            if (parseInt(cards[i].getAttribute("data-price"), 10) > listing.price) {
              before = cards[i];
              break;
            }
          }
        }
        grid.insertBefore(node, before);
        var empty = document.querySelector("[data-live-empty]");
        if (empty) {
          empty.hidden = true;
        }
      })
      .catch(function () {
        showNotice(grid);
      });
  }

  var handlers = {
    listing: function (el, listing) {
      if (!listing || typeof listing.id !== "string") {
        return;
      }
      var card = findCard(el, listing.id);
      if (listing.status !== "open") {
        if (card && card.parentNode) {
          card.parentNode.removeChild(card);
        }
        return;
      }
      if (!card) {
        insertCard(el, listing);
        return;
      }
      var currency = el.getAttribute("data-currency") || "";
      setText(card, "price", formatMoney(listing.price, currency, exponentOf(el)));
    },

    job: function (el, job, source) {
      if (!job || typeof job.status !== "string") {
        return;
      }
      setText(el, "status", job.status);
      var badge = el.querySelector('[data-field="status"]');
      if (badge) {
        badge.className = "status status-" + job.status.replace(/[^a-z_-]/g, "");
      }
      if (job.status === "succeeded" || job.status === "failed") {
        /* The stream ends here; closing stops EventSource from reconnecting. */
        source.close();
        window.location.reload();
      }
    },

    order: function (el, order, source) {
      if (!order || typeof order.status !== "string") {
        return;
      }
      if (order.status !== el.getAttribute("data-status")) {
        source.close();
        window.location.reload();
      }
    },

    wallet: function (el, wallet) {
      if (!wallet || typeof wallet.currency !== "string") {
        return;
      }
      var exp = exponentOf(el);
      setText(el, "balance", formatMoney(wallet.balance, wallet.currency, exp));
      setText(el, "held", formatMoney(wallet.held, wallet.currency, exp));
      setText(el, "available", formatMoney(wallet.available, wallet.currency, exp));
    }
  };

  function follow(el) {
    var url = el.getAttribute("data-live-src");
    /* Same origin only: a path on this site, never another host. */
    if (!url || url.charAt(0) !== "/" || url.charAt(1) === "/" || url.charAt(1) === "\\") {
      return;
    }
    var source;
    try {
      source = new EventSource(url);
    } catch (e) {
      return;
    }
    var opened = false;
    source.onopen = function () {
      opened = true;
    };
    Object.keys(handlers).forEach(function (type) {
      source.addEventListener(type, function (event) {
        handlers[type](el, parse(event), source);
      });
    });
    source.onerror = function () {
      /* CLOSED means the browser gave up (not a stream, 404, 401): degrade like no script. */
      if (source.readyState === EventSource.CLOSED) {
        if (!opened && el.getAttribute("data-live-fallback") === "reload") {
          window.setTimeout(function () {
            window.location.reload();
          }, FALLBACK_RELOAD_MS);
        }
      }
    };
    window.addEventListener("pagehide", function () {
      source.close();
    });
  }

  function start() {
    var live = document.querySelectorAll("[data-live-src]");
    for (var i = 0; i < live.length; i++) {
      follow(live[i]);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
