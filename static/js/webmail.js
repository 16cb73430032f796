// Webmail, reading. No inline script: CSP script-src 'self'.
// - « Tout sélectionner » checks every message of the list (it stays checked, or half, as
//   boxes change one by one); the list may be swapped by htmx, so listeners are delegated.
// - Keyboard shortcuts (the « ? » dialog lists them, _shortcuts.html): j/k next/previous,
//   o/Entrée open, r reply, f forward, # or Suppr to the Trash, c compose, / search, u back.
//   Never while typing in a field, never with Ctrl, Alt or Cmd.
// - « Imprimer » on the print page opens the browser's print dialog.
"use strict";
(() => {
  // --- Select all -------------------------------------------------------------------------
  const boxes = (form) => Array.from(form.querySelectorAll("input[name=uids][type=checkbox]"));
  const syncAll = (form) => {
    const all = form.querySelector("input.select-all");
    if (!all) return;
    const list = boxes(form);
    const checked = list.filter((b) => b.checked).length;
    all.checked = list.length > 0 && checked === list.length;
    all.indeterminate = checked > 0 && checked < list.length;
  };
  const reveal = () => {
    document.querySelectorAll("input.select-all[hidden]").forEach((all) => {
      all.hidden = false;
      if (all.form) syncAll(all.form);
    });
    document.querySelectorAll("[data-shortcuts-open][hidden]").forEach((b) => (b.hidden = false));
  };
  document.addEventListener("change", (event) => {
    const target = event.target;
    if (!(target instanceof HTMLInputElement) || !target.form) return;
    if (target.classList.contains("select-all")) {
      boxes(target.form).forEach((b) => (b.checked = target.checked));
    } else if (target.name === "uids") {
      syncAll(target.form);
    }
  });
  document.body.addEventListener("htmx:afterSwap", reveal);
  reveal();

  // --- Print --------------------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target instanceof Element && event.target.closest("[data-print]");
    if (button) window.print();
    const help = event.target instanceof Element && event.target.closest("[data-shortcuts-open]");
    if (help) openHelp();
  });

  // --- Keyboard shortcuts -----------------------------------------------------------------
  const help = document.getElementById("raccourcis");
  const openHelp = () => {
    if (help && !help.open) help.showModal();
  };
  const typing = (element) =>
    element instanceof HTMLElement &&
    (element.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(element.tagName));
  const shortcut = (name) => document.querySelector(`[data-shortcut="${name}"]`);
  const follow = (name) => {
    const element = shortcut(name);
    if (!element) return false;
    element.click();
    return true;
  };
  const rows = () => Array.from(document.querySelectorAll("#message-list tbody tr[data-url]"));
  let current = -1;
  const choose = (index) => {
    const all = rows();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((row, i) => row.classList.toggle("is-current", i === current));
    const link = all[current].querySelector("td.subject a");
    if (link) link.focus();
  };
  const currentRow = () => {
    const all = rows();
    const focused = document.activeElement && document.activeElement.closest("tr[data-url]");
    if (focused && all.includes(focused)) return focused;
    return current >= 0 ? all[current] : null;
  };
  const trashFromList = () => {
    const row = currentRow();
    const form = document.querySelector("#message-list form.message-actions");
    const action = form && form.querySelector("select[name=action]");
    if (!form || !action || !action.querySelector("option[value=supprimer]")) return false;
    if (row) {
      boxes(form).forEach((b) => (b.checked = false));
      const box = row.querySelector("input[name=uids]");
      if (box) box.checked = true;
    }
    if (!boxes(form).some((b) => b.checked)) return false;
    action.value = "supprimer";
    form.requestSubmit();
    return true;
  };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (typing(event.target) || (help && help.open)) return;
    const inList = rows().length > 0;
    let done = false;
    switch (event.key) {
      case "?":
        openHelp();
        done = true;
        break;
      case "/": {
        const search = document.querySelector("[data-shortcut-target=search]");
        if (search) {
          search.focus();
          done = true;
        }
        break;
      }
      case "j":
        if (inList) {
          const row = currentRow();
          choose(row ? rows().indexOf(row) + 1 : 0);
          done = true;
        } else done = follow("next");
        break;
      case "k":
        if (inList) {
          const row = currentRow();
          choose(row ? rows().indexOf(row) - 1 : 0);
          done = true;
        } else done = follow("previous");
        break;
      case "o":
      case "Enter": {
        const row = inList ? currentRow() : null;
        if (row && (event.key === "o" || document.activeElement === document.body)) {
          window.location.assign(row.dataset.url);
          done = true;
        }
        break;
      }
      case "r":
        done = follow("reply");
        break;
      case "f":
        done = follow("forward");
        break;
      case "c":
        done = follow("compose");
        break;
      case "u":
        done = follow("back");
        break;
      case "#":
      case "Delete":
        done = inList ? trashFromList() : follow("delete");
        break;
      default:
        break;
    }
    if (done) event.preventDefault();
  });
})();
