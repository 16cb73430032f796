// On a phone (issue 19): the menus marked data-fold-on-phone (the BAL switcher and folders, the
// search) are <details> rendered open, so that a desktop and a browser without JavaScript see
// them; on a narrow screen they start folded behind their summary. No inline script: CSP.
"use strict";
(() => {
  const fold = () => {
    if (!window.matchMedia("(max-width: 50rem)").matches) return;
    document.querySelectorAll("details[data-fold-on-phone][open]").forEach((menu) => {
      menu.open = false;
    });
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fold);
  else fold();
})();
