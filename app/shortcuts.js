// Keyboard shortcuts of the Annotate page, run in a components.html iframe and listening on the app's page.
// Static: no prompt or response text ever reaches this script.
//   1-9      give the next response its rank (A first, then B, ...; after a letter key, that response)
//   A-H      pick the response the next number key ranks
//   Enter    submit the ranking
// Keys typed into a text field (the comment box) are left alone.
(function () {
  const app = window.parent;
  const doc = app.document;
  if (app.rlhfShortcuts) doc.removeEventListener("keydown", app.rlhfShortcuts, true);
  let picked = null; // index of the response chosen with a letter key, until a number ranks it

  function rankGroups() {
    return Array.from(doc.querySelectorAll('[role="radiogroup"]')).filter((group) =>
      /^Rank of [A-Z]$/.test(group.getAttribute("aria-label") || "")
    );
  }

  function isChecked(group) {
    return group.querySelector('input[type="radio"]:checked') !== null;
  }

  function setRank(group, rank) {
    const option = Array.from(group.querySelectorAll("label")).find((label) => label.innerText.trim() === rank);
    if (option) option.click();
    return option !== undefined;
  }

  function onKey(event) {
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type !== "radio"));
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const groups = rankGroups();
    if (groups.length === 0) return; // not on the Annotate page, or no item shown
    const key = event.key;
    if (/^[1-9]$/.test(key) && Number(key) <= groups.length) {
      let index = picked !== null ? picked : groups.findIndex((group) => !isChecked(group));
      if (index < 0) index = groups.length - 1;
      if (setRank(groups[index], key)) event.preventDefault();
      picked = null;
    } else if (/^[a-hA-H]$/.test(key) && key.toUpperCase().charCodeAt(0) - 65 < groups.length) {
      picked = key.toUpperCase().charCodeAt(0) - 65;
      groups[picked].scrollIntoView({ block: "nearest" });
      event.preventDefault();
    } else if (key === "Enter" && target.tagName !== "BUTTON") {
      const submit = Array.from(doc.querySelectorAll("button")).find(
        (button) => button.innerText.trim().endsWith("Submit ranking")
      );
      if (submit) {
        submit.click();
        event.preventDefault();
      }
    }
  }

  app.rlhfShortcuts = onKey;
  doc.addEventListener("keydown", onKey, true); // capture: a focused radio keeps Enter to itself otherwise
})();
