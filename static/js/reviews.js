// The review item page: keyboard shortcuts for the common path, and the reason list and the
// param inputs following the chosen decision. Everything also works without this file.
(function () {
  "use strict";

  function typing(target) {
    return target && (target.tagName === "INPUT" && target.type === "text" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
  }

  function sync(form) {
    var chosen = form.querySelector("input[name=verdict]:checked");
    var verdict = chosen ? chosen.value : "approve";
    form.querySelectorAll(".param-input").forEach(function (input) {
      input.disabled = verdict !== "edit_approve";
    });
    var select = form.querySelector("#reason-code");
    if (!select) { return; }
    select.querySelectorAll("optgroup").forEach(function (group) {
      var fits = group.dataset.verdicts.split(" ").indexOf(verdict) !== -1;
      group.hidden = !fits;
      group.disabled = !fits;
    });
    var picked = select.selectedOptions[0];
    if (picked && picked.parentElement.disabled) { select.value = ""; }
  }

  function choose(form, verdict) {
    var radio = form.querySelector("input[name=verdict][value=" + verdict + "]");
    if (!radio) { return; }
    radio.checked = true;
    sync(form);
    // Editing usually means the amount: focus it when the action has one.
    var focus = verdict === "edit_approve"
      ? form.querySelector(".param-input[inputmode=decimal]") || form.querySelector(".param-input")
      : form.querySelector("#reason-code");
    if (focus) { focus.focus(); }
  }

  document.addEventListener("change", function (event) {
    var form = event.target.closest && event.target.closest("#decision-form");
    if (form && event.target.name === "verdict") { sync(form); }
  });

  document.addEventListener("htmx:load", function () {
    var form = document.getElementById("decision-form");
    if (form) { sync(form); }
  });

  document.addEventListener("keydown", function (event) {
    var form = document.getElementById("decision-form");
    if (form && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "c") {
      var claim = document.getElementById("claim-button");
      if (claim) { event.preventDefault(); claim.click(); }
      return;
    }
    if (!form) { return; }
    var verdicts = { a: "approve", e: "edit_approve", r: "reject" };
    if (verdicts[event.key]) {
      event.preventDefault();
      choose(form, verdicts[event.key]);
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("decision-form");
    if (form) { sync(form); }
  });
})();
